"""The new results' figures (issue 15) assert their claims on QUICK configs.

Each figure's ``compute(QUICK)`` runs once per module (``test_experiments``
checks the figure contract; here its numbers are held to theory).
"""

from __future__ import annotations

import numpy as np
import pytest

import exploding as ex
from tests import _figures


# ------------------------------------------------ fig14: driven RNN maps


@pytest.fixture(scope="module")
def driven():
  return _figures.quick("fig14_driven_maps")


def test_driven_prediction_is_the_zero_of_the_driven_exponent(driven):
  module, _ = driven
  for v in (0.05, 0.5, 2.0):
    g = float(module.driven_critical_scale(v))
    assert abs(ex.theory.rnn_lyapunov_max("tanh", g, np.sqrt(v))) < 1e-9
    assert ex.theory.rnn_lyapunov_max("tanh", 0.99 * g, np.sqrt(v)) < 0
  assert float(module.driven_critical_scale(0.0)) == pytest.approx(1.0)


def test_inputs_move_the_edge_of_chaos_as_driven_mean_field(driven):
  _, r = driven
  v, gc = r["input_variances"], r["critical_scale"]
  lo, hi = r["critical_low"], r["critical_high"]
  assert np.all((lo <= gc) & (gc <= hi))
  driven_points = v > 0
  # 128 units, 128 steps, 8 seeds: g_c within 0.06 of the driven mean field
  # (measured 1.43, 1.71, 1.88 vs 1.41, 1.69, 1.86), and it moves by
  # more than 0.4 from no input to sigma_x^2 = 1.
  np.testing.assert_allclose(gc[driven_points],
                             r["theory_critical"][driven_points], atol=0.06)
  assert np.all(np.diff(gc[driven_points]) > 0)
  assert gc[-1] - gc[0] > 0.4
  # The whole rate curve follows 0.5 log chi_1(g^2, sigma_x^2) where driven.
  err = np.abs(r["rate"] - r["theory_rate"])[driven_points]
  assert err.max() < 0.05
  # Driven and ordered: rates well below zero at g = 1.2 (chaos suppressed).
  g12 = np.argmin(np.abs(r["weight_scales"] - 1.2))
  assert np.all(r["rate_high"][v >= 0.5, g12] < -0.1)


# ------------------------------------ fig15: batch norm vs batch size


@pytest.fixture(scope="module")
def batchnorm():
  return _figures.quick("fig15_batchnorm_batch_size")[1]


def test_batchnorm_rate_follows_the_finite_batch_formula(batchnorm):
  r = batchnorm
  bs, rate, theory = r["batch_sizes"], r["rate"], r["theory"]
  assert np.all((r["rate_low"] <= rate) & (rate <= r["rate_high"]))
  # Gradients explode at every B, faster for smaller batches.
  assert np.all(rate > 0.15) and np.all(np.diff(rate) < 0)
  # Width 128: within 0.01 nats/layer of the exact ReLU formula at B = 16
  # (measured 0.233 vs 0.232) ...
  ok = bs >= 8
  assert ok.any()
  np.testing.assert_allclose(rate[ok], theory[ok], atol=0.01)
  # ... which lies above its large-B limit 0.5 log(pi / (pi - 1)).
  assert theory[bs == 16][0] == pytest.approx(
      0.5 * np.log(ex.theory.batchnorm_gradient_rate("relu", 16)))
  assert theory[-1] > 0.5 * np.log(np.pi / (np.pi - 1))
  # B = 4: 1 / chi^2_3 has infinite variance; the typical (log) growth a
  # network shows is well below the formula's mean growth (0.46 vs 0.56).
  assert r["rate_high"][bs == 4][0] < theory[bs == 4][0] - 0.05


# ------------------------------------------------ fig16: depth scales


@pytest.fixture(scope="module")
def depth_scales():
  return _figures.quick("fig16_depth_scales")[1]


def test_depth_scales_follow_mean_field(depth_scales):
  r = depth_scales
  sw2 = r["sigma_w2"]
  xi_q, xi_c = r["xi_q"][0], r["xi_c"][0]
  th_q, th_c = r["theory_xi_q"][0], r["theory_xi_c"][0]
  for name in ("xi_q", "xi_c"):
    assert np.all((r[f"{name}_low"] <= r[name])
                  & (r[name] <= r[f"{name}_high"]))
  # Width 256, 8 seeds: xi_q within 0.15 layers of Schoenholz et al.'s eq. 4
  # (measured 1.32, 1.75, 0.99 vs 1.35, 1.81, 0.94).
  np.testing.assert_allclose(xi_q, th_q, atol=0.15)
  # xi_c in the ordered phase within 5% (1.83 vs 1.84, 6.01 vs 5.94); in
  # the chaotic phase (sigma_w^2 = 3.5) within 30% (7.1 vs 7.8).
  ordered = sw2 < r["critical_sigma_w2"][0]
  np.testing.assert_allclose(xi_c[ordered], th_c[ordered], rtol=0.05)
  np.testing.assert_allclose(xi_c[~ordered], th_c[~ordered], rtol=0.3)
  # Towards the edge of chaos xi_c grows (x3 from 0.7 to 1.2); xi_q stays
  # below two layers everywhere.
  assert xi_c[1] > 3 * xi_c[0]
  assert np.all(xi_q < 2)


# --------------------------------------------- fig17: the seeds' claims


@pytest.fixture(scope="module")
def seed_claims():
  return _figures.quick("fig17_seed_claims")[1]


def test_stacking_keeps_the_rate_and_the_edge_of_chaos(seed_claims):
  r = seed_claims
  gs, rate = r["weight_scales"], r["stack_rate"]
  # Block-triangular Jacobian: the stack's rate is the bottom layer's. Past
  # the edge (g >= 1) every depth's rate is within 0.01 of depth 1's;
  # below it the deeper stack decays more slowly by a transient (more
  # paths), at most 0.06 here.
  assert np.all(np.abs(rate[1:, gs >= 1] - rate[0, gs >= 1]) < 0.01)
  assert np.all(np.abs(rate[1:] - rate[0]) < 0.06)
  assert np.all(rate[:, gs <= 0.9] < 0) and np.all(rate[:, gs >= 1.6] > 0)
  # Every depth's g_c interval holds the mean-field bottom layer's (1 at
  # width 64 up to the flat finite-width stretch just above it).
  assert np.all(r["stack_critical_low"] <= 1.01)
  assert np.all(r["stack_critical_high"] >= 1.0)


def test_a_large_initial_state_costs_one_step_not_the_rate(seed_claims):
  r = seed_claims
  s, first = r["state_scales"], np.mean(r["state_first_step"], axis=-1)
  assert np.all(np.diff(first) < 0)
  assert first[s == 100][0] < first[s == 1][0] - 3
  # tanh squashes any state into [-1, 1]: ||h_t|| <= sqrt(n) from step 1.
  assert np.all(r["state_max_log_norm_after"]
                <= 0.5 * np.log(int(r["hidden"])) + 1e-5)
  # The rate after step 1 is the same for every scale (0.01 .. 100).
  assert np.ptp(r["state_rate"]) < 0.02
  assert np.max(r["state_rate_low"]) < np.min(r["state_rate_high"])


def test_a_contraction_never_explodes_whatever_its_inputs(seed_claims):
  r = seed_claims
  w = float(r["contraction"])
  g = r["contraction_log_growth"]                # (acts, stds, T, seeds)
  T = np.arange(1, g.shape[-2] + 1)[:, None]
  # |phi'| <= 1: log |dh_T / dh_0| <= T log w at every T, seed, input scale.
  assert np.all(g <= T * np.log(w) + 1e-4 * T)
  assert np.all(r["contraction_rate_high"] <= np.log(w) + 1e-5)
  # Larger inputs saturate tanh: it vanishes faster, never grows.
  tanh = list(r["activations_c"]).index("tanh")
  assert np.all(np.diff(r["contraction_rate"][tanh]) < 0)
  # The forward state stays bounded (tanh: |h| <= 1).
  assert np.nanmax(r["contraction_log_state_norm"][tanh]) <= 1e-6
