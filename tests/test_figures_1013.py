"""The numbers figures 10-13 quote, checked on their QUICK configs (or
smaller) against what they must be: bounds that hold by construction,
closed forms, and independent recomputation.

The figure modules are loaded under the runner's module names, so a test run
that also runs ``tests/test_experiments.py`` shares their compiled programs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exploding as ex
from tests import _figures


# ---------------------------------------------------------------- fig10


@pytest.fixture(scope="module")
def fig10():
  return _figures.quick("fig10_cliff")


def test_fig10_clipped_updates_are_bounded_so_never_thrown(fig10):
  module, r = fig10
  cap = module.QUICK["learning_rate"] * module.QUICK["clip_norm"]
  assert np.all(r["starts_longest"][1] <= cap * (1 + 1e-12))
  assert np.all(r["thrown"][1] == 0.0)
  # Unclipped descents do get thrown off from some of these starts.
  assert r["thrown"][0][0] > 0


def test_fig10_counts_and_intervals_match_the_per_start_arrays(fig10):
  module, r = fig10
  cfg = module.QUICK
  reached = (r["starts_loss"] < cfg["reached_loss"]).mean(1)
  thrown = (r["starts_longest"] > cfg["thrown_step"]).mean(1)
  np.testing.assert_array_equal(r["reached"][:, 0], reached)
  np.testing.assert_array_equal(r["thrown"][:, 0], thrown)
  for est in (*r["reached"], *r["thrown"]):
    value, low, high = est
    assert 0.0 <= low <= value <= high <= 1.0


def test_fig10_starts_lie_in_the_band_and_descents_reproduce(fig10):
  module, r = fig10
  cfg = module.QUICK
  w0, b0 = r["starts_wb"].T
  assert r["starts_wb"].shape == (cfg["starts"], 2)
  assert np.all((w0 >= cfg["start_w"][0]) & (w0 <= cfg["start_w"][1]))
  with jax.enable_x64(True):
    db = b0 - np.asarray(ex.cliff.cliff_boundary(w0))
    assert np.all((db >= cfg["start_db"][0] - 1e-12)
                  & (db <= cfg["start_db"][1] + 1e-12))
    d = ex.cliff.cliff_descent(float(w0[0]), float(b0[0]),
                               learning_rate=cfg["learning_rate"],
                               steps=cfg["steps"], clip_norm=cfg["clip_norm"])
    assert float(d.loss[-1]) == r["starts_loss"][1, 0]


def test_fig10_bootstrap_fraction_degenerate_and_known_cases():
  module = _figures.load("fig10_cliff")
  assert module._bootstrap_fraction(np.ones(7, bool)) == (1.0, 1.0, 1.0)
  assert module._bootstrap_fraction(np.zeros(7, bool)) == (0.0, 0.0, 0.0)
  value, low, high = module._bootstrap_fraction(np.arange(10) < 3)
  assert value == 0.3 and low < 0.3 < high


# ---------------------------------------------------------------- fig11


@pytest.fixture(scope="module")
def fig11():
  return _figures.quick("fig11_clipping_training")


def test_fig11_best_cell_is_the_lowest_median_of_its_method(fig11):
  module, r = fig11
  score = np.median(np.where(np.isnan(r["grid_final"]), np.inf,
                             r["grid_final"]), -1)
  for m in range(len(module.METHODS)):
    i, j = r["best"][m]
    assert r["column_method"][j] == m
    mine = score[:, r["column_method"] == m]
    assert score[i, j] == mine.min()


def test_fig11_norm_clipping_keeps_the_direction_and_bounds_the_norm(fig11):
  module, r = fig11
  m = module.METHODS.index("norm")
  threshold = r["columns"][r["best"][m][1]]
  post = r["post_norm"][m]
  ok = np.isfinite(post)
  assert np.all(post[ok] <= threshold * (1 + 1e-5))
  np.testing.assert_allclose(r["cosine"][m][ok], 1.0, atol=1e-5)
  # Value clipping turns the update somewhere (cosine < 1), never beyond.
  v = module.METHODS.index("value")
  cos = r["cosine"][v][np.isfinite(r["cosine"][v])]
  assert cos.max() <= 1 + 1e-5 and cos.min() < 0.999


def test_fig11_fresh_estimates_match_the_fresh_runs(fig11):
  module, r = fig11
  n_fresh = len(module.QUICK["fresh_keys"]) * module.QUICK["train"]["seeds"]
  assert r["loss"].shape[:2] == (3, n_fresh)
  for m in range(3):
    final = np.where(np.isnan(r["final"][m]), np.inf, r["final"][m])
    value, low, high = r["final_estimate"][m]
    assert value == np.median(final)
    assert final.min() <= low <= value <= high <= final.max()
  # The fresh seeds are not the grid's: the best cell's numbers differ.
  i, j = r["best"][1]
  assert not np.allclose(np.sort(r["final"][1][:3]),
                         np.sort(r["grid_final"][i, j]))


def test_fig11_median_interval_counts_failed_runs_as_worst():
  module = _figures.load("fig11_clipping_training")
  value, low, high = module._median_interval(np.array([0.1, np.nan, np.nan]))
  assert value == np.inf and high == np.inf and low == 0.1


# ---------------------------------------------------------------- fig12


@pytest.fixture(scope="module")
def fig12():
  return _figures.quick("fig12_truncated_bptt")


def test_fig12_window_k_gives_exactly_zero_from_lag_k_on(fig12):
  _, r = fig12
  lags = np.arange(int(r["length"]))
  for g in range(len(r["weight_scales"])):
    for i, k in enumerate(r["truncations"]):
      row = r["lag_grad_norm"][g, i]
      assert np.all(row[lags >= k] == 0.0), (g, k)
      assert np.all(row[lags < k] > 0.0), (g, k)
  # Hence every k <= L (k = L included) gives the recalled state nothing.
  lag = int(r["lag"])
  short = r["truncations"] <= lag
  assert np.all(r["lag_grad_norm"][:, short, lag] == 0.0)
  assert np.all(r["lag_grad_norm"][:, ~short, lag] > 0.0)


def test_fig12_records_are_consistent(fig12):
  module, r = fig12
  assert np.all(r["nan_runs"] == 0)   # clipped runs stay finite
  assert np.all((r["clipped_fraction"] >= 0) & (r["clipped_fraction"] <= 1))
  assert np.all(r["raw_norm"] > 0)
  assert module._median_range(np.array([3.0, 1.0, 2.0])) == "2 [1, 3]"


# ---------------------------------------------------------------- fig13


def _native(module, activation, dtype, scales, *, init="gaussian", n=16,
            length=40, key=3):
  k_init, k_state, k_probe = jax.random.split(jax.random.key(key), 3)
  h0 = jax.random.normal(k_state, (n,), jnp.float32).astype(dtype)
  p = ex.rnn.init(k_init, n, activation=activation, init=init, dtype=dtype)
  out = module.native_backprop(p, jnp.asarray(scales, dtype), h0,
                               module.probe(k_probe, n, dtype), length=length)
  return p, h0, k_probe, {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_fig13_native_norm_is_the_engines(dtype):
  module = _figures.load("fig13_precision_failure")
  scales = [0.4, 1.0, 2.5]
  p, h0, k_probe, out = _native(module, "tanh", dtype, scales)
  for i, g in enumerate(scales):
    ref = ex.vjp_growth(ex.rnn.step,
                        p.replace(weight_scale=jnp.asarray(g, dtype)), h0,
                        length=40, key=k_probe, return_native=True)
    mine = out["norm"][i].astype(np.float64)
    theirs = np.asarray(ref.native_norm, np.float64)
    mine_bad = ~np.isfinite(mine) | (mine == 0)
    np.testing.assert_array_equal(mine_bad, np.asarray(ref.native_invalid))
    if dtype != "float32":
      np.testing.assert_array_equal(mine, theirs)   # bit for bit
    elif g < 1.5:   # float32 GEMM vs matvec: rounding, away from chaos
      np.testing.assert_allclose(mine, theirs, rtol=1e-5)


def test_fig13_linear_orthogonal_float16_fails_where_closed_form_says():
  """Linear, orthogonal W0: the gradient at lag t has norm exactly g^t. In
  float16 (max 65504 < 2^16, smallest subnormal 2^-24) at g = 2 some entry
  overflows once g^t exceeds 65504 (not before: entries <= norm), and the
  in-format norm, summing squares, overflows once g^(2t) > 65504, at lag 8;
  at g = 1/2 the squares underflow from lag 13 on, while the entries stay
  non-zero at least while g^t / sqrt(n) >= 2^-24."""
  module = _figures.load("fig13_precision_failure")
  n = 16
  _, _, _, out = _native(module, "linear", "float16", [2.0, 0.5],
                         init="orthogonal", n=n, length=40)
  lags = np.arange(1, 41)
  norm_bad = ~np.isfinite(out["norm"].astype(np.float64)) | (
      out["norm"] == 0)
  entry = out["nonfinite"] | out["all_zero"]
  # g = 2: no entry above 2^16 before lag 16; all entries inf by lag 16 +
  # log2(sqrt(n)) + 1 (the largest entry is >= norm / sqrt(n)).
  first = lags[np.argmax(out["nonfinite"][0])]
  assert 16 <= first <= 16 + np.log2(np.sqrt(n)) + 1
  assert lags[np.argmax(norm_bad[0])] in (8, 9)
  # g = 1/2: the norm (squares below 2^-25 round to 0) fails well before the
  # entries do.
  assert lags[np.argmax(norm_bad[1])] in (12, 13, 14)
  assert not entry[1][lags <= 24 - np.log2(np.sqrt(n)) - 1].any()
  # Main criterion implies the secondary one: norm_bad wherever entry fails.
  assert np.all(norm_bad[entry])


def test_fig13_first_lag_and_range_helpers():
  module = _figures.load("fig13_precision_failure")
  fails = np.zeros((5, 3), bool)      # (T, seeds)
  fails[2:, 0] = True
  fails[4, 1] = True
  np.testing.assert_array_equal(module._first_lag(fails), [3, 5, 6])
  assert module._lag_range(np.array([6, 6, 6]), 5) == ">5"
  assert module._lag_range(np.array([3, 5, 6]), 5) == "5 (3->5)"
  assert module._lag_range(np.array([2, 2]), 5) == "2"
