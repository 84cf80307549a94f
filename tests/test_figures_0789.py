"""The theory computed inside figures 07-09, against closed forms.

fig07's finite-depth mean field (the q map iterated from the input), fig08's
free-probability spectral density (S-transform equations solved by Newton
continuation) and the seed bootstrap of fig08/fig09. ``compute`` and
``plot`` of every figure run in ``tests/test_experiments.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import exploding as ex
from tests import _figures


@pytest.fixture(scope="module")
def fig07():
  return _figures.load("fig07_phase_diagram")


@pytest.fixture(scope="module")
def fig08():
  return _figures.load("fig08_jacobian_spectra")


@pytest.fixture(scope="module")
def fig09():
  return _figures.load("fig09_lyapunov_spectra")


# fig07: finite-depth mean field


def test_finite_depth_rate_is_log_sigma_w_in_the_ordered_linear_regime(
    fig07):
  # sigma_b = 0, sigma_w^2 < 1: q -> 0 geometrically, chi_1(q) -> sigma_w^2.
  rate = fig07.finite_depth_rate(np.array([0.3, 0.6]), 0.0, 400)
  np.testing.assert_allclose(rate, 0.5 * np.log([0.3, 0.6]), atol=1e-3)


@pytest.mark.parametrize("sigma_b2", [0.05, 0.3, 2.0])
def test_finite_depth_crossing_tends_to_the_mean_field_line(fig07, sigma_b2):
  exact = float(ex.theory.critical_sigma_w2("tanh", sigma_b2))
  grid = np.linspace(exact - 0.3, exact + 0.3, 61)
  crossing = fig07._first_crossings(
      fig07.finite_depth_rate(grid[None, :], sigma_b2, 200), grid)[0]
  assert abs(crossing - exact) < 2e-3


def test_finite_depth_crossing_at_zero_bias_is_tangential(fig07):
  # Mean field crosses at 1, but log chi_1 ~ (sigma_w^2 - 1)^2 above it: a
  # finite net starting at q0 = 1 (above q* ~ 0) stays ordered past 1.
  grid = np.linspace(0.8, 1.6, 161)
  rate = fig07.finite_depth_rate(grid[None, :], 0.0, 48)
  crossing = fig07._first_crossings(rate, grid)[0]
  assert 1.05 < crossing < 1.3
  assert np.log(ex.theory.chi1("tanh", 1.1, 0.0)) < 3e-3


def test_finite_depth_rate_quadrature_is_converged(fig07):
  sw2 = np.linspace(0.5, 6.0, 7)[None, :]
  sb2 = np.array([0.0, 0.5, 4.0])[:, None]
  np.testing.assert_allclose(
      fig07.finite_depth_rate(sw2, sb2, 16),
      fig07.finite_depth_rate(sw2, sb2, 16, nodes=4001), atol=1e-12)


def test_finite_depth_rate_rejects_bad_input(fig07):
  with pytest.raises(ValueError, match="depth"):
    fig07.finite_depth_rate(1.0, 0.0, 1)
  with pytest.raises(ValueError, match="sigma_w2"):
    fig07.finite_depth_rate(-1.0, 0.0, 8)


# fig08: free-probability density


def _moments(density, log10_x):
  step = log10_x[1] - log10_x[0]
  x = 10.0**log10_x
  mass = np.nansum(density) * step
  mean = np.nansum(density * x) * step
  return mass, mean, np.nansum(density * x**2) * step - mean**2


def test_free_density_is_marchenko_pastur_at_depth_one(fig08):
  log10_x = np.linspace(-3.0, np.log10(3.9), 40)
  x = 10.0**log10_x
  mp = np.sqrt((4.0 - x) * x) / (2 * np.pi * x)     # W W^T, ratio 1
  np.testing.assert_allclose(
      fig08.free_density("linear", "gaussian", 1, 1.0, 1.0, log10_x),
      x * mp * np.log(10.0), rtol=1e-7)


def test_free_density_orthogonal_relu_two_layers_is_arcsine(fig08):
  # J J^T = 4 P Q P, P and Q free projections of trace 1/2: an atom 1/2 at
  # 0 and y = x / 4 with density 1 / (2 pi sqrt(y (1 - y))) on (0, 1).
  log10_x = np.linspace(-3.0, np.log10(3.95), 40)
  x = 10.0**log10_x
  y = x / 4.0
  arcsine = 1.0 / (2 * np.pi * np.sqrt(y * (1.0 - y))) / 4.0
  np.testing.assert_allclose(
      fig08.free_density("relu", "orthogonal", 2, 2.0, 1.0, log10_x),
      x * arcsine * np.log(10.0), rtol=1e-6)


@pytest.mark.parametrize("activation,init,depth,mass", [
    ("linear", "gaussian", 4, None),
    ("relu", "gaussian", 4, 0.5),
    ("relu", "orthogonal", 6, None),
    ("tanh", "gaussian", 2, None),
    ("tanh", "orthogonal", 4, 1.0),
])
def test_free_density_moments_match_the_closed_forms(fig08, activation,
                                                     init, depth, mass):
  sb2 = 1e-3 if activation == "tanh" else 0.0
  sw2 = float(ex.theory.critical_sigma_w2(activation, sb2))
  q = float(ex.theory.q_star(activation, sw2, sb2))
  log10_x = np.arange(-9.0, 2.5, 0.005)
  density = fig08.free_density(activation, init, depth, sw2, q, log10_x,
                               bins=200)
  got_mass, mean, var = _moments(density, log10_x)
  want_mean, want_var = ex.theory.jacobian_spectrum_moments(
      activation, depth, init=init, sigma_w2=sw2, sigma_b2=sb2)
  assert abs(mean - want_mean) < 5e-3
  assert abs(var / want_var - 1.0) < 0.02
  if mass is not None:       # ReLU: the other half is the point mass at 0
    assert abs(got_mass - mass) < 5e-3


def test_binned_tanh_law_matches_dense_quadrature(fig08):
  q = 0.3
  moment = fig08._moment_transform("tanh", q, 400)
  z = np.linspace(-12, 12, 200001)
  w = np.exp(-0.5 * z**2)
  w /= w.sum()
  d = np.cosh(np.sqrt(q) * z)**-4.0
  for u in (3e4 + 0j, 2.0 + 0.1j, 0.5 + 0.05j):
    m, _ = moment(u)
    want = np.sum(w * d / (u - d))
    assert abs(m - want) < 1e-3 * abs(want)


def test_free_density_rejects_bad_input(fig08):
  x = np.linspace(-2, 1, 5)
  with pytest.raises(ValueError, match="point mass"):
    fig08.free_density("linear", "orthogonal", 3, 1.0, 1.0, x)
  with pytest.raises(ValueError, match="init"):
    fig08.free_density("relu", "haar", 3, 2.0, 1.0, x)
  with pytest.raises(ValueError, match="increasing"):
    fig08.free_density("relu", "gaussian", 3, 2.0, 1.0, x[::-1])
  with pytest.raises(ValueError, match="activation"):
    fig08.free_density("erf", "gaussian", 3, 2.0, 1.0, x)


def test_linear_orthogonal_jacobians_are_isometries(fig08):
  sv2 = fig08._measure(8, np.array([1, 3]), 2, 0, [1.0, 2.0, 1.2],
                       [0.0, 0.0, 1e-3], [1.0, 1.0, 0.1])
  sv2 = sv2.reshape(3, 2, 2, 2, 8)                 # act, init, depth, seed
  # Orthogonal draws are float32: orthogonal to ~1e-7.
  np.testing.assert_allclose(sv2[0, 1], 1.0, atol=1e-5)
  # Gaussian ones are not.
  assert np.all(sv2[0, 0].max(-1) > 1.5)


# fig08 / fig09: the seed bootstrap


@pytest.mark.parametrize("name", ["fig08", "fig09"])
def test_bootstrap_mean_interval(name, fig08, fig09):
  module = {"fig08": fig08, "fig09": fig09}[name]
  rng = np.random.default_rng(1)
  values = rng.standard_normal((3, 16))
  mean, low, high = module._bootstrap_mean(values)
  np.testing.assert_allclose(mean, values.mean(-1))
  assert np.all(low < mean) and np.all(mean < high)
  # The percentile bootstrap of a mean: about +-1.645 sd / sqrt(n).
  half = 1.645 * values.std(-1) / 4.0
  np.testing.assert_allclose(high - low, 2 * half, rtol=0.25)
  constant = module._bootstrap_mean(np.full((2, 8), 3.0))
  np.testing.assert_allclose(np.stack(constant), 3.0)


def test_fig09_gaps_pick_the_largest_per_region(fig09):
  gs = np.array([0.5, 0.9, 1.1, 1.3, 1.5, 3.0])
  theory = np.asarray(ex.theory.rnn_lyapunov_max("tanh", gs))
  lam = theory + np.array([0.03, 0.03, -0.002, -0.02, -0.01, -0.015])
  results = {"weight_scales": gs, "theory_at_grid": theory,
             "exponents": np.zeros((1, 6, 2, 8)),
             "lambda_max": lam[None], "lambda_low": lam[None] - 0.01,
             "lambda_high": lam[None] + 0.01}
  found = fig09.gaps(results)
  assert found["ordered"][0] == 0.5
  assert found["near_1"][0] == 1.3
  np.testing.assert_allclose(found["near_1"][1].value, -0.02)
  assert found["chaotic"][0] == 3.0
  np.testing.assert_allclose(
      [found["chaotic"][1].low, found["chaotic"][1].high], [-0.025, -0.005])
  assert found["chaotic"][1].n_seeds == 8
