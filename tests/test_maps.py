"""GradientMap summaries: rates, crossings and their bootstrap intervals,
checked on maps built by hand (known per-seed slopes)."""

import numpy as np
import pytest

import exploding as ex


def _map(slopes, gs, length=40):
  """A map whose seed s at scale i grows exactly as slopes[i, s] * t."""
  slopes = np.asarray(slopes, np.float64)
  t = np.arange(1, length + 1, dtype=np.float64)
  lg = slopes[:, None, :] * t[None, :, None]
  return ex.GradientMap(log_growth=lg, log_state_norm=np.zeros_like(lg),
                        overflow_step=-np.ones(slopes.shape, int),
                        axes={"weight_scale": np.asarray(gs, np.float64)},
                        steps=t, config={})


def test_rate_interval_is_the_bootstrap_of_the_seed_mean():
  rng = np.random.default_rng(0)
  slopes = rng.normal(0.0, 1.0, (3, 8)) + np.array([[-1.0], [0.0], [1.0]])
  m = _map(slopes, [0.5, 1.0, 1.5])
  est = m.rate(interval=0.9, resamples=4000)
  np.testing.assert_allclose(est.value, slopes.mean(-1), atol=1e-12)
  np.testing.assert_array_equal(est.n_seeds, [8, 8, 8])
  # The 90% bootstrap interval of a mean of 8 unit normals: about
  # +-1.645 / sqrt(8) = +-0.58 (bootstrap's sd uses the biased variance).
  width = est.high - est.low
  sd = slopes.std(-1) / np.sqrt(8)
  np.testing.assert_allclose(width, 2 * 1.645 * sd, rtol=0.15)
  assert np.all(est.low <= est.value) and np.all(est.value <= est.high)
  # Deterministic for a seed; another seed moves the interval a little.
  again = m.rate(interval=0.9, resamples=4000)
  np.testing.assert_array_equal(again.low, est.low)


def test_critical_scale_interval_brackets_the_per_seed_crossings():
  # Seed s's rate is g - c_s: each seed crosses at its own c_s.
  gs = np.linspace(0.5, 1.5, 101)
  cs = np.array([0.9, 0.95, 1.0, 1.05, 1.1, 0.92, 1.08, 1.0])
  m = _map(gs[:, None] - cs[None, :], gs)
  est = m.critical_scale(interval=0.9)
  assert est.value == pytest.approx(cs.mean(), abs=1e-9)
  assert est.n_seeds == 8
  assert cs.min() < est.low < est.value < est.high < cs.max()
  assert str(est).startswith(f"{cs.mean():.3g} [")
  assert str(est).endswith("(8 seeds)")
  # One seed: no spread.
  one = _map(gs[:, None] - cs[None, :1], gs).critical_scale(interval=0.9)
  assert one.low == one.high == pytest.approx(0.9)


def test_critical_line_intervals_over_a_second_axis():
  gs = np.linspace(0.5, 2.0, 61)
  bs = np.array([0.0, 0.5])
  shift = np.array([[0.0, 0.1, -0.1, 0.05]])
  slopes = (gs[None, :, None] - (1.0 + bs[:, None, None]) - shift[None])
  t = np.arange(1, 11, dtype=np.float64)
  lg = slopes[:, :, None, :] * t[:, None]
  m = ex.GradientMap(log_growth=lg, log_state_norm=np.zeros_like(lg),
                     overflow_step=-np.ones(slopes.shape, int),
                     axes={"bias_scale": bs, "weight_scale": gs}, steps=t,
                     config={})
  est = m.critical_scale("weight_scale", interval=0.8)
  np.testing.assert_allclose(est.value, 1.0 + bs + shift.mean(), atol=1e-9)
  assert est.low.shape == (2,) and np.all(est.low < est.value)
  assert np.all(est.high > est.value)
  np.testing.assert_array_equal(est.n_seeds, [4, 4])


@pytest.mark.parametrize("kwargs", [dict(interval=1.0), dict(interval=0.0),
                                    dict(interval=0.9, resamples=0)])
def test_bad_intervals_are_refused(kwargs):
  m = _map(np.ones((2, 3)), [0.5, 1.0])
  with pytest.raises(ValueError):
    m.rate(**kwargs)
