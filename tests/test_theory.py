"""Tests for exploding.theory: closed forms, bad input, numerical cross-checks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import exploding as ex
from exploding import _theory_gaussian as gauss
from exploding import theory as th


# Mean field ----------------------------------------------------------------


def test_relu_and_linear_chi1_closed_forms():
  sw = np.array([0.5, 1.0, 2.0, 3.0])
  np.testing.assert_allclose(th.chi1("relu", sw, 0.1), sw / 2, rtol=0)
  np.testing.assert_allclose(th.chi1("linear", sw, 0.0), sw, rtol=0)
  assert th.critical_sigma_w2("relu", 0.3) == 2.0
  assert th.critical_sigma_w2("linear", 0.0) == 1.0


def test_relu_q_star_cases():
  assert th.q_star("relu", 1.0, 0.5) == pytest.approx(1.0)  # 0.5 / (1 - 1/2)
  assert th.q_star("relu", 1.0, 0.0) == 0.0
  assert th.q_star("relu", 3.0, 0.1) == math.inf  # no finite fixed point
  assert math.isnan(th.q_star("relu", 2.0, 0.0))  # every q is fixed
  assert th.chi1("relu", 3.0, 0.1) == 1.5  # defined although q* is inf


def test_tanh_q_star_and_chi1():
  assert th.q_star("tanh", 0.5, 0.0) == 0.0
  assert th.chi1("tanh", 0.5, 0.0) == pytest.approx(0.5, abs=1e-12)
  q = th.q_star("tanh", 2.0, 0.1)
  # q* is a fixed point of the variance map, checked by independent sampling.
  z = np.random.default_rng(0).standard_normal(2_000_000)
  v = 2.0 * np.mean(np.tanh(np.sqrt(q) * z)**2) + 0.1
  assert v == pytest.approx(q, rel=2e-3)
  chi = 2.0 * np.mean((1 - np.tanh(np.sqrt(q) * z)**2)**2)
  assert th.chi1("tanh", 2.0, 0.1) == pytest.approx(chi, rel=2e-3)


def test_quadrature_matches_erf_closed_form():
  # A user Activation goes through autodiff + Gauss-Hermite; erf's
  # closed forms (arcsin kernel) are independent of both.
  my_erf = ex.Activation("my_erf", jax.scipy.special.erf, 2 / math.sqrt(math.pi))
  sw, sb = np.array([0.5, 1.5, 3.0]), 0.2
  np.testing.assert_allclose(th.q_star(my_erf, sw, sb),
                             th.q_star("erf", sw, sb), rtol=1e-8)
  np.testing.assert_allclose(th.chi1(my_erf, sw, sb), th.chi1("erf", sw, sb),
                             rtol=1e-8)


def test_critical_line():
  assert th.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-12)
  assert th.critical_sigma_w2("erf", 0.0) == pytest.approx(math.pi / 4)
  sb = np.array([0.01, 0.05, 0.1, 0.3])
  crit = th.critical_sigma_w2("tanh", sb)
  assert np.all(np.diff(crit) > 0)
  # Schoenholz et al. 2017 use sigma_b2 = 0.05, critical sigma_w2 ~ 1.76.
  assert crit[1] == pytest.approx(1.7610, abs=1e-3)
  np.testing.assert_allclose(th.chi1("tanh", crit, sb), 1.0, atol=1e-9)


def test_depth_scales():
  # Ordered phase: xi_c = -1/log chi1; it diverges at criticality.
  xi = th.depth_scale_c("tanh", 1.2, 0.05)
  assert xi == pytest.approx(-1 / math.log(th.chi1("tanh", 1.2, 0.05)))
  crit = th.critical_sigma_w2("tanh", 0.05)
  assert th.depth_scale_c("tanh", crit * 0.999, 0.05) > 500
  assert th.depth_scale_c("relu", 1.0, 0.1) == pytest.approx(1 / math.log(2))
  assert th.depth_scale_q("relu", 1.0, 0.1) == pytest.approx(1 / math.log(2))
  # Chaotic tanh, sigma_b = 0: c* = 0; with bias 0 < c* < 1.
  assert th.c_star("tanh", 2.0, 0.0) == pytest.approx(0.0, abs=1e-9)
  c = th.c_star("tanh", 2.0, 0.05)
  assert 0.3 < c < 0.99
  assert th.c_star("tanh", 0.8, 0.05) == 1.0
  assert 0 < th.depth_scale_c("tanh", 2.0, 0.05) < 50


# Exact at any variance -------------------------------------------------------
# A fixed Gauss-Hermite rule in z misses tanh'(sqrt(q) z)^2 once sqrt(q) is a
# few units (101 nodes: E[tanh'^2] +33% at q = 30). Checked here against
# closed forms up to q = 1e6 and against an independent dense reference.

_MY = {  # user Activations: the generic quadrature, not the closed forms
    "erf": ex.Activation("my_erf", jax.scipy.special.erf,
                         2 / math.sqrt(math.pi)),
    "relu": ex.Activation("my_relu", jax.nn.relu, 1.0),
    "linear": ex.Activation("my_linear", lambda x: x, 1.0),
    "hard_tanh": ex.Activation("my_hard_tanh",
                               lambda x: jnp.clip(x, -1.0, 1.0), 1.0),
}
_BIG_Q = np.geomspace(1e-4, 1e6, 11)


def _closed_form(name, q, kind):
  """E[phi^2] and E[phi'^2] at variance q, written out independently."""
  if name == "erf":  # arcsine kernel (Williams 1997)
    return (2 / math.pi * math.asin(2 * q / (1 + 2 * q)) if kind == "phi2"
            else 4 / (math.pi * math.sqrt(1 + 4 * q)))
  if name in ("relu", "linear"):
    c = 0.5 if name == "relu" else 1.0
    return c * q if kind == "phi2" else c
  a = 1 / math.sqrt(q)  # hard_tanh: normal CDF and pdf at a = 1/sqrt(q)
  if kind == "dphi2":
    return math.erf(a / math.sqrt(2))
  if a < 1:  # E[z^2; |z| < a] by its series: the direct form cancels
    inner = math.sqrt(2 / math.pi) * sum(
        (-a * a / 2)**k * a**3 / (math.factorial(k) * (2 * k + 3))
        for k in range(30))
  else:  # P(|z| < a) - 2 a pdf(a)
    inner = math.erf(a / math.sqrt(2)) - math.sqrt(2 / math.pi) * a * (
        math.exp(-a * a / 2))
  return q * inner + math.erfc(a / math.sqrt(2))


@pytest.mark.parametrize("name", sorted(_MY))
@pytest.mark.parametrize("kind", ["phi2", "dphi2"])
def test_moments_exact_up_to_q_1e6(name, kind):
  want = np.array([_closed_form(name, q, kind) for q in _BIG_Q])
  for act in (_MY[name], ex.activation(name)):  # quadrature, closed form
    got = gauss.moment(act, _BIG_Q, kind)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)


def test_erf_correlation_map_exact_at_large_q():
  # The 2-d expectations of c* and xi_c against the arcsine kernel:
  # E[erf u1 erf u2] = (2/pi) asin(2 c q / (1 + 2q)), E[erf' u1 erf' u2] =
  # (4/pi) / sqrt((1 + 2q)^2 - 4 c^2 q^2) (Williams 1997).
  sw, sb = np.array([3.0, 400.0]), np.array([0.1, 10.0])
  q, c = th.q_star("erf", sw, sb), th.c_star("erf", sw, sb)
  assert np.all((0 < c) & (c < 1)) and q[-1] > 300
  mapped = (sw * 2 / np.pi * np.arcsin(2 * c * q / (1 + 2 * q)) + sb) / q
  np.testing.assert_allclose(mapped, c, rtol=1e-10)
  chi_c = sw * 4 / np.pi / np.sqrt((1 + 2 * q)**2 - 4 * c * c * q * q)
  np.testing.assert_allclose(th.depth_scale_c("erf", sw, sb),
                             -1 / np.log(chi_c), rtol=1e-9)


def _derivs(name, u):
  """(phi, phi', phi'') for the reference, from the textbook formulas."""
  if name == "tanh":
    t = np.tanh(u)
    return t, 1 - t * t, -2 * t * (1 - t * t)
  s = 1 / (1 + np.exp(-u))
  return s, s * (1 - s), s * (1 - s) * (1 - 2 * s)


def _reference(f, q):
  """E[f(sqrt(q) z)] by the trapezoid rule on a uniform grid in u.

  For an integrand analytic in a strip (tanh: |Im u| < pi/2) the trapezoid
  rule on the whole line converges geometrically in 1/h (Trefethen &
  Weideman, SIAM Rev. 2014); the value must not move when h halves.
  """
  s = math.sqrt(q)

  def rule(h):
    u = h * np.arange(-math.ceil(12 * s / h), math.ceil(12 * s / h) + 1)
    return h * np.sum(f(u) * np.exp(-u * u / (2 * q))) / math.sqrt(
        2 * math.pi * q)

  h = min(0.1, s / 8)
  fine = rule(h)
  assert rule(2 * h) == pytest.approx(fine, rel=1e-12, abs=1e-15)
  return fine


def _reference_q_star(name, sw, sb):
  lo, hi = 0.0, sw + sb + 1.0  # V(q) <= sw + sb: phi is bounded by 1
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    v = sw * _reference(lambda u: _derivs(name, u)[0]**2, mid) + sb
    lo, hi = (mid, hi) if v >= mid else (lo, mid)
  return 0.5 * (lo + hi)


def _reference_chi1(name, sw, sb, q=None):
  q = _reference_q_star(name, sw, sb) if q is None else q
  return sw * _reference(lambda u: _derivs(name, u)[1]**2, q)


# g = sqrt(sigma_w2) up to 20, sigma_b2 up to 10, both activations.
_POINTS = [("tanh", 400.0, 0.0), ("tanh", 400.0, 10.0), ("tanh", 25.0, 0.05),
           ("tanh", 2.0, 10.0), ("sigmoid", 16.0, 0.0),
           ("sigmoid", 400.0, 10.0), ("sigmoid", 120.0, 1.0)]


@pytest.mark.parametrize("name, sw, sb", _POINTS)
def test_mean_field_matches_dense_reference(name, sw, sb):
  q = _reference_q_star(name, sw, sb)
  assert th.q_star(name, sw, sb) == pytest.approx(q, rel=1e-9)
  chi = _reference_chi1(name, sw, sb, q)
  assert th.chi1(name, sw, sb) == pytest.approx(chi, rel=1e-9)
  assert th.rnn_lyapunov_max(name, math.sqrt(sw), math.sqrt(sb)) == (
      pytest.approx(0.5 * math.log(chi), abs=1e-9))
  phi, dphi, ddphi = (lambda u, k=k: _derivs(name, u)[k] for k in range(3))
  slope = sw * _reference(lambda u: dphi(u)**2 + phi(u) * ddphi(u), q)
  assert th.depth_scale_q(name, sw, sb) == pytest.approx(
      -1 / math.log(slope), rel=1e-8)


def test_vectorised_mean_field_matches_reference():
  # One array call over g = 1.5..20, sigma_b2 = 0..10 (tanh).
  g = np.array([1.5, 5.0, 12.0, 20.0])
  sb = np.array([0.0, 3.0, 10.0])[:, None]
  lam = th.rnn_lyapunov_max("tanh", g, np.sqrt(sb))
  assert lam.shape == (3, 4)
  for i, j in [(0, 3), (1, 1), (2, 2), (2, 0)]:
    chi = _reference_chi1("tanh", g[j]**2, float(sb[i, 0]))
    assert lam[i, j] == pytest.approx(0.5 * math.log(chi), abs=1e-9)


@pytest.mark.parametrize("name, sb", [("tanh", [0.5, 2.0, 10.0]),
                                      ("sigmoid", [0.0, 1.0])])
def test_critical_line_matches_dense_reference(name, sb):
  crit = th.critical_sigma_w2(name, np.array(sb))
  for sw, b in zip(crit, sb):
    # chi_1 rises through 1 with slope ~1/sigma_w2: 1e-9 pins sigma_w2.
    assert _reference_chi1(name, sw, b) == pytest.approx(1.0, abs=1e-9)


def _reference_pair(f, q, c):
  """E[f(u1) f(u2)], corr c: 2-d trapezoid in (z1, z2), step ~0.25 in u."""
  h = min(0.25, 0.25 / math.sqrt(q))
  z = h * np.arange(-math.ceil(9 / h), math.ceil(9 / h) + 1)
  w = h * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
  u1 = math.sqrt(q) * z[:, None]
  u2 = math.sqrt(q) * (c * z[:, None] + math.sqrt(1 - c * c) * z[None, :])
  return np.einsum("i,ij,j->", w * f(u1[:, 0]), f(u2), w)


@pytest.mark.parametrize("sw, sb", [(4.0, 0.5), (100.0, 2.0)])
def test_tanh_correlation_map_matches_dense_reference(sw, sb):
  q, c = th.q_star("tanh", sw, sb), th.c_star("tanh", sw, sb)
  assert 0 < c < 1
  mapped = (sw * _reference_pair(np.tanh, q, c) + sb) / q
  assert mapped == pytest.approx(c, abs=1e-9)  # c* is the fixed point
  chi_c = sw * _reference_pair(lambda u: 1 - np.tanh(u)**2, q, c)
  assert th.depth_scale_c("tanh", sw, sb) == pytest.approx(
      -1 / math.log(chi_c), rel=1e-8)


def test_known_values_at_large_q():
  # QUADPACK (epsrel 1e-13) values; the old 101-node Gauss-Hermite rule gave
  # 0.31193, 0.45507, 0.60809; 4.26107; 9.865; 2.4806.
  lam = th.rnn_lyapunov_max("tanh", np.array([3.0, 4.0, 5.0]))
  np.testing.assert_allclose(lam, [0.31025, 0.43288, 0.53243], atol=1e-5)
  assert th.critical_sigma_w2("tanh", 2.0) == pytest.approx(4.26640,
                                                            abs=1e-5)
  # sigma_w at the sigmoid's edge of chaos without bias (Pascanu's 1/gamma
  # = 4 is only the bound).
  assert math.sqrt(th.critical_sigma_w2("sigmoid", 0.0)) == pytest.approx(
      10.1493, abs=1e-4)
  assert th.chi1("tanh", 16.0, 0.05) == pytest.approx(2.37149, abs=1e-5)
  assert th.depth_scale_q("tanh", 16.0, 0.0) == pytest.approx(0.493112,
                                                              abs=1e-6)
  assert th.depth_scale_q("tanh", 25.0, 0.0) == pytest.approx(0.434288,
                                                              abs=1e-6)


# Recurrent, gated, residual -------------------------------------------------


def test_rnn_lyapunov_and_pascanu():
  g = np.array([0.3, 0.7, 0.99])
  np.testing.assert_allclose(th.rnn_lyapunov_max("tanh", g), np.log(g),
                             atol=1e-12)
  assert th.rnn_lyapunov_max("relu", math.sqrt(2.0), 0.1) == pytest.approx(0)
  assert th.rnn_lyapunov_max("tanh", 2.0) > 0
  assert th.pascanu_vanishing_bound("sigmoid") == 4.0
  assert th.pascanu_vanishing_bound("tanh") == 1.0


def test_rnn_lyapunov_matches_simulated_tanh_rnn():
  # h -> tanh(g W h), n = 1024, one W: mean log stretch of a renormalised
  # tangent over steps 200-600. Seen: g=2: 0.154 vs 0.155, g=3: 0.306 vs
  # 0.310 (n=256 near the edge, g=1.5: 0.018 vs 0.065, so g >= 2 here).
  # 400 correlated steps give ~0.005 noise; tolerance 0.02.
  n = 1024
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.standard_normal((n, n)) / math.sqrt(n), jnp.float32)
  hv0 = jnp.asarray(rng.standard_normal((n, 2)), jnp.float32)

  @jax.jit
  def stretches(g):
    def step(hv, _):
      z = g * (w @ hv)  # one GEMM for the state and the tangent
      h, v = jnp.tanh(z[:, 0]), (1 - jnp.tanh(z[:, 0])**2) * z[:, 1]
      norm = jnp.linalg.norm(v)
      return jnp.stack([h, v / norm], axis=1), jnp.log(norm)
    return jax.lax.scan(step, hv0, None, length=600)[1]

  for g in (2.0, 3.0):
    measured = float(jnp.mean(stretches(g)[200:]))
    assert measured == pytest.approx(th.rnn_lyapunov_max("tanh", g), abs=0.02)


def test_lstm():
  s = 1 / (1 + math.exp(-1.0))
  assert th.lstm_forget_gradient(1.0, 50) == pytest.approx(50 * math.log(s))
  assert th.lstm_memory_time(1.0) == pytest.approx(-1 / math.log(s))
  assert math.isfinite(th.lstm_forget_gradient(-800.0, 3))  # stable log
  assert th.lstm_memory_time(5.0) == pytest.approx(math.exp(5.0), rel=1e-2)


def test_residual():
  assert th.residual_gradient_rate("relu", 0.5) == pytest.approx(1.25)
  assert th.residual_gradient_rate("linear", 0.5, 1.0, q=3.0) == 1.5
  # sigma_w2 = c / depth keeps the total below c gamma^2 = 1 at every
  # depth; fixed sigma_w2 grows it as sqrt(depth) for tanh (q grows
  # linearly, E[tanh'^2] falls as q^-1/2): 2.64 at 10 layers, 10.5 at 100,
  # 34.3 at 1000.
  scaled = [th.residual_log_gradient("tanh", 1.0 / d, d) for d in (10, 300)]
  fixed = [th.residual_log_gradient("tanh", 1.0, d) for d in (100, 1000)]
  assert 0.5 < scaled[0] < scaled[1] < 1.0
  assert fixed[1] / fixed[0] == pytest.approx(math.sqrt(10), rel=0.05)
  # ReLU at infinite width: q cancels, exactly depth * log(1 + sigma_w2/2).
  assert th.residual_log_gradient("relu", 0.2, 50) == pytest.approx(
      50 * math.log(1.1), rel=1e-12)
  # tanh is odd: no mean mode; the overlap with the stream grows slower
  # than the tangent and feeds only a small negative term (-0.2% here).
  wide = th.residual_log_gradient("tanh", 1.0, 40)
  assert th.residual_log_gradient("tanh", 1.0, 40, width=64) == pytest.approx(
      wide, rel=3e-3)


def _relu_coherent_rate(sw):
  """ReLU residual stream's growth per layer (squared norm), from its
  stationary mean ratio r = m / sqrt(q) solved by bisection:
  (1 + g / (sqrt(2 pi) r))^2 = 1 + g^2 / 2 + 2 g r / sqrt(2 pi)."""
  g, c = math.sqrt(sw), 1 / math.sqrt(2 * math.pi)
  f = lambda r: (1 + g * c / r)**2 - (1 + sw / 2 + 2 * g * c * r)
  lo, hi = 1e-3, 1e3   # f(lo) > 0 > f(hi)
  for _ in range(200):
    mid = math.sqrt(lo * hi)
    lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
  return math.log(1 + sw / 2 + 2 * g * c * lo)


@pytest.mark.parametrize("sw", [1.0, 6.25])
def test_residual_relu_coherent_rate(sw):
  # ReLU is homogeneous, so the stream itself is a tangent (J h = h'): at
  # finite width the gradient ends up growing as the stream does, at the
  # rate of the closed-form stationary ratio (0.388 / 0.860 nats per
  # layer for the norm at g = 1 / 2.5); mean field's is 0.203 / 0.712.
  total = th.residual_log_gradient("relu", sw, 300, width=64,
                                   cumulative=True)
  assert total[-1] - total[-2] == pytest.approx(_relu_coherent_rate(sw),
                                                rel=1e-9)
  assert 0.5 * _relu_coherent_rate(sw) == pytest.approx(
      {1.0: 0.3878, 6.25: 0.8600}[sw], abs=1e-4)
  infinite = th.residual_log_gradient("relu", sw, 300, cumulative=True)
  assert infinite[-1] - infinite[-2] == pytest.approx(math.log(1 + sw / 2))
  # The coherent mode starts at 1/width: a wider net takes longer.
  early = [th.residual_log_gradient("relu", sw, 10, width=n) for n in
           (16, 256, 4096)]
  assert early[0] > early[1] > early[2] > infinite[9]


# Finite networks -------------------------------------------------------------


def _digamma(x):
  """psi(x) by recurrence up to x >= 30 and the asymptotic series."""
  acc = 0.0
  while x < 30:
    acc -= 1 / x
    x += 1
  x2 = 1 / (x * x)
  return acc + math.log(x) - 0.5 / x - x2 * (1 / 12 - x2 * (1 / 120
                                                             - x2 / 252))


@pytest.mark.parametrize("n", [1, 3, 16, 64, 257])
def test_quenched_rate_exact_for_relu_and_linear(n):
  # One ReLU layer multiplies |v|^2 by (g^2 / n) chi^2_K, K ~ Bin(n, 1/2)
  # (Hanin 2018), K = 0 excluded; orthogonal weights: (g^2) Beta(K/2,
  # (n - K)/2). Linear: chi^2_n / n. Against psi summed independently.
  k = np.arange(1, n + 1)
  pk = np.array([math.comb(n, int(j)) for j in k], np.float64) / (2.0**n - 1)
  psi = np.array([_digamma(j / 2) for j in k])
  relu = float(np.sum(pk * (psi + math.log(2 / n))))
  ortho = float(np.sum(pk * (psi - _digamma(n / 2))))
  sw = 1.7
  assert th.quenched_log_gradient_rate("relu", sw, 0.0, n) == pytest.approx(
      math.log(sw) + relu, abs=1e-12)
  assert th.quenched_log_gradient_rate(
      "relu", sw, 0.3, n, init="orthogonal") == pytest.approx(
          math.log(sw) + ortho, abs=1e-12)
  assert th.quenched_log_gradient_rate("linear", 1.0, 0.0, n) == (
      pytest.approx(_digamma(n / 2) + math.log(2 / n), abs=1e-12))
  assert th.quenched_log_gradient_rate(
      "linear", 1.0, 0.0, n, init="orthogonal") == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("name, n, q, init", [
    ("tanh", 8, 0.7, "gaussian"), ("tanh", 4, 30.0, "gaussian"),
    ("sigmoid", 8, 4.0, "gaussian"), ("tanh", 8, 2.0, "orthogonal")])
def test_quenched_rate_matches_monte_carlo(name, n, q, init):
  # E log of (1/n) sum phi'(z_i)^2 xi_i^2 by sampling; xi uniform on the
  # sphere of radius sqrt(n) for orthogonal weights. 4 standard errors.
  rng = np.random.default_rng(0)
  z = math.sqrt(q) * rng.standard_normal((400_000, n))
  xi = rng.standard_normal((400_000, n))
  if init == "orthogonal":
    xi *= math.sqrt(n) / np.linalg.norm(xi, axis=1, keepdims=True)
  d2 = gauss.derivatives(ex.activation(name), z, 1)**2
  samples = np.log(np.mean(d2 * xi**2, axis=1))
  got = th.quenched_log_gradient_rate(name, 1.0, 0.0, n, init=init, q=q)
  se = samples.std() / math.sqrt(samples.size)
  assert abs(got - samples.mean()) < 4 * se


def test_quenched_rate_approaches_mean_field_as_one_over_width():
  # Jensen: below log chi1, by Var X / (2 (E X)^2) / n to leading order.
  sw, sb = 1.8, 0.1
  q = th.q_star("tanh", sw, sb)
  act = ex.activation("tanh")
  d2, d4 = (float(gauss.moment(act, np.float64(q), k)) for k in
            ("dphi2", "dphi4"))
  gap = (3 * d4 - d2**2) / (2 * d2**2)
  for n in (16, 256):
    r = th.quenched_log_gradient_rate("tanh", sw, sb, n)
    assert r < math.log(th.chi1("tanh", sw, sb))
  n = 20_000
  r = th.quenched_log_gradient_rate("tanh", sw, sb, n)
  assert n * (math.log(th.chi1("tanh", sw, sb)) - r) == pytest.approx(
      gap, rel=2e-3)


def test_quenched_critical_scales():
  # ReLU, width 64: 1.4429 Gaussian, 1.4316 orthogonal (mean field 1.4142).
  g = math.sqrt(th.quenched_critical_sigma_w2("relu", 64))
  go = math.sqrt(th.quenched_critical_sigma_w2("relu", 64, init="orthogonal"))
  assert (round(g, 4), round(go, 4)) == (1.4429, 1.4316)
  assert th.quenched_log_gradient_rate("relu", g * g, 0.0, 64) == (
      pytest.approx(0, abs=1e-9))
  # tanh with the depth: the least-squares slope over layers 25..96 of the
  # cumulative prediction vanishes at the returned scale.
  sw = th.quenched_critical_sigma_w2("tanh", 64, depth=96, init="orthogonal")
  y = th.quenched_log_gradient("tanh", sw, 96, 64, init="orthogonal",
                               cumulative=True)
  assert np.polyfit(np.arange(25, 97), y[24:], 1)[0] == pytest.approx(
      0, abs=1e-9)
  assert sw > th.critical_sigma_w2("tanh", 0.0)
  assert y[-1] == pytest.approx(th.quenched_log_gradient(
      "tanh", sw, 96, 64, init="orthogonal"))


def test_tied_ordered_rate_closed_form_and_fixed_point():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((3, 12, 12)) / math.sqrt(12)
  rho = np.max(np.abs(np.linalg.eigvals(w)), axis=-1)
  gs = np.array([0.3, 0.6, 0.9])
  np.testing.assert_allclose(th.spectral_radius(w), rho, rtol=1e-12)
  np.testing.assert_allclose(th.tied_ordered_rate("tanh", gs, w),
                             np.log(gs[None, :] * rho[:, None]), rtol=1e-12)
  np.testing.assert_allclose(th.tied_critical_scale("linear", w), 1 / rho)
  # Through the fixed-point branch (a zero bias takes it): the same.
  np.testing.assert_allclose(
      th.tied_ordered_rate("tanh", gs, w, bias=np.zeros(12)),
      np.log(gs[None, :] * rho[:, None]), rtol=1e-9)
  # Sigmoid with a bias: iterate the map to its fixed point (contracting
  # here) and take log rho of the Jacobian there, independently.
  b = 0.3 * rng.standard_normal(12)
  sig = lambda x: 1 / (1 + np.exp(-x))
  for g in (2.0, 5.0):
    h = np.full(12, 0.5)
    for _ in range(3000):
      h = sig(g * w[0] @ h + b)
    z = g * w[0] @ h + b
    jac = g * (sig(z) * (1 - sig(z)))[:, None] * w[0]
    want = np.log(np.max(np.abs(np.linalg.eigvals(jac))))
    assert want < 0
    assert th.tied_ordered_rate("sigmoid", g, w[0], bias=b) == (
        pytest.approx(want, abs=1e-10))


def test_tied_critical_scale_is_where_the_fixed_point_turns_unstable():
  rng = np.random.default_rng(1)
  w = rng.standard_normal((2, 16, 16)) / 4.0
  gc = th.tied_critical_scale("sigmoid", w)
  assert np.all(gc > 4 / np.linalg.norm(w, ord=2, axis=(1, 2)))  # Pascanu
  for wi, g in zip(w, gc):
    rates = th.tied_ordered_rate("sigmoid", [0.999 * g, g, 1.001 * g], wi)
    assert rates[0] < 0 < rates[2] and abs(rates[1]) < 1e-4


def test_sweep_params_draws_per_seed():
  m = ex.rnn.model(6, activation="sigmoid")
  p = th.sweep_params(m, 3, key=5)
  assert p.W0.shape == (3, 6, 6)
  assert not np.allclose(p.W0[0], p.W0[1])
  np.testing.assert_array_equal(th.sweep_params(m, 2, key=5).W0, p.W0[:2])


# Batch norm -----------------------------------------------------------------


def test_batchnorm_closed_forms():
  assert th.batchnorm_gradient_rate("linear", 8) == pytest.approx(1.2)
  assert th.batchnorm_gradient_rate("relu", 2) == 0.0
  assert th.batchnorm_gradient_rate("relu", 3) == math.inf
  big = th.batchnorm_gradient_rate("relu", 100_000)
  assert big == pytest.approx(math.pi / (math.pi - 1), rel=1e-4)
  rates = [th.batchnorm_gradient_rate("relu", b) for b in (4, 8, 32, 128)]
  assert np.all(np.diff(rates) < 0) and rates[-1] > math.pi / (math.pi - 1)
  # The ReLU closed form against the generic Monte-Carlo path.
  my_relu = ex.Activation("my_relu", jax.nn.relu, 1.0)
  assert th.batchnorm_gradient_rate(my_relu, 8) == pytest.approx(
      th.batchnorm_gradient_rate("relu", 8), rel=5e-3)
  assert th.batchnorm_log_gradient_rate("linear", 8) == pytest.approx(
      math.log(1.2))


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_batchnorm_rate_matches_simulated_network(name):
  # A BN MLP (batch 8, width 128, 32 layers, eps 1e-5): per-layer log growth
  # of ||J v||^2 for the whole (batch, width) state, after 6 layers for the
  # batch Gram matrix to settle, mean over 32 seeds. Seen: relu 0.572 +-
  # 0.004 vs 0.581, tanh 0.300 +- 0.003 vs 0.307 (width 256: relu 0.582):
  # a ~1.5% finite-width bias plus seed noise; 0.03 is ~2x their sum.
  batch, width, depth, seeds = 8, 128, 32, 32
  phi = ex.activation(name).fn

  def layer(h, w):
    z = h @ w.T
    m = z.mean(0)
    return phi((z - m) * jax.lax.rsqrt(((z - m)**2).mean(0) + 1e-5))

  def run(ws, h, v):
    def body(c, w):
      h, v = jax.jvp(lambda x: layer(x, w), (c[0],), (c[1],))
      s = jnp.sum(v * v)
      return (h, v / jnp.sqrt(s)), jnp.log(s)

    return jax.lax.scan(body, (h, v / jnp.linalg.norm(v)), ws)[1]

  rng = np.random.default_rng(0)
  ws = rng.standard_normal((seeds, depth, width, width), dtype=np.float32)
  h = rng.standard_normal((seeds, batch, width), dtype=np.float32)
  v = rng.standard_normal((seeds, batch, width), dtype=np.float32)
  logs = jax.jit(jax.vmap(run))(ws / np.float32(math.sqrt(width)), h, v)
  measured = float(jnp.mean(logs[:, 6:]))
  predicted = th.batchnorm_log_gradient_rate(name, batch)
  assert measured == pytest.approx(predicted, abs=0.03)


# Spectra and fluctuations -----------------------------------------------------


def test_jacobian_spectrum_closed_forms():
  assert th.jacobian_spectrum_moments("linear", 5, "orthogonal") == (1.0, 0.0)
  assert th.jacobian_spectrum_moments("linear", 5, "gaussian") == (1.0, 5.0)
  mean, var = th.jacobian_spectrum_moments("relu", 6, "orthogonal")
  assert (mean, var) == (1.0, pytest.approx(6.0))
  assert th.jacobian_spectrum_moments("relu", 6)[1] == pytest.approx(12.0)
  # Off criticality the mean is chi1^L.
  mean, _ = th.jacobian_spectrum_moments("relu", 3, sigma_w2=1.0)
  assert mean == pytest.approx(0.125)
  # tanh approaches isometry as sigma_b2 -> 0 (q* -> 0).
  var = [th.jacobian_spectrum_moments("tanh", 10, "orthogonal",
                                      sigma_b2=sb2)[1] for sb2 in (1e-4, 0.05)]
  assert var[0] < 0.2 < 2.0 < var[1]


@pytest.mark.parametrize("init, rel", [("orthogonal", 0.2),
                                       ("gaussian", 0.35)])
def test_jacobian_spectrum_matches_materialised_jacobian(init, rel):
  # tanh at criticality, sigma_b2 = 0.05, width 96, depth 5, 16 seeds: the
  # variance of the squared singular values of J = prod D_l W_l. Seen over
  # 3 draws: orthogonal 1.64/1.72/1.63 (s.e. 0.1) vs 1.71, gaussian
  # 6.83/6.80/7.37 (s.e. 0.8) vs 6.71. Free probability is exact only as
  # width -> inf; the tolerances are ~3 s.e. of the seed noise.
  sb2, depth, width, seeds = 0.05, 5, 96, 16
  sw2 = th.critical_sigma_w2("tanh", sb2)
  q = th.q_star("tanh", sw2, sb2)
  rng = np.random.default_rng(0)
  g = rng.standard_normal((depth, seeds, width, width))
  if init == "orthogonal":
    qq, r = np.linalg.qr(g)  # Haar: fix the signs of R's diagonal
    ws = qq * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
  else:
    ws = g / math.sqrt(width)
  h = np.tanh(math.sqrt(q) * rng.standard_normal((seeds, width)))
  jac = np.broadcast_to(np.eye(width), (seeds, width, width))
  for w in math.sqrt(sw2) * ws:
    z = np.einsum("sij,sj->si", w, h)
    z = z + math.sqrt(sb2) * rng.standard_normal((seeds, width))
    jac = ((1 - np.tanh(z)**2)[..., None] * w) @ jac
    h = np.tanh(z)
  ev = np.linalg.svd(jac, compute_uv=False)**2
  mean, var = th.jacobian_spectrum_moments("tanh", depth, init, sigma_b2=sb2)
  assert ev.mean() == pytest.approx(mean, rel=0.1)
  assert ev.var(axis=1).mean() == pytest.approx(var, rel=rel)


def test_hanin_fluctuation_exact_at_small_width():
  # ||J u||^2 for a He-initialised ReLU net, 8-8-8 hidden, input 8: the
  # ratio E[X^2]/E[X]^2 is exactly (1 + 5/8)^3 = 4.29. 100k networks give a
  # standard error ~0.08 (measured 4.35 +- 0.055 at 200k); tolerance 0.3.
  widths, n0, samples = [8, 8, 8], 8, 100_000
  rng = np.random.default_rng(0)
  h = np.broadcast_to(rng.standard_normal(n0), (samples, n0))
  u = rng.standard_normal(n0)
  v = np.broadcast_to(u / np.linalg.norm(u), (samples, n0))
  n_in = n0
  for n in widths:
    w = rng.standard_normal((samples, n, n_in)) * math.sqrt(2.0 / n_in)
    z, dv = np.einsum("sij,sj->si", w, h), np.einsum("sij,sj->si", w, v)
    h, v = np.where(z > 0, z, 0.0), np.where(z > 0, dv, 0.0)
    n_in = n
  x = (v**2).sum(1)
  assert x.mean() == pytest.approx(1.0, abs=0.03)
  predicted = th.hanin_gradient_fluctuation(widths)
  assert predicted == pytest.approx(1.625**3)
  assert (x**2).mean() / x.mean()**2 == pytest.approx(predicted, abs=0.3)


# Float limits -----------------------------------------------------------------


def test_dtype_limits():
  f16 = th.dtype_limits("float16")
  assert f16.max == 65504.0 and f16.tiny == 2.0**-14
  assert f16.smallest_subnormal == 2.0**-24 and f16.eps == 2.0**-10
  assert th.dtype_limits(jnp.float32).max == pytest.approx(3.4028235e38)
  bf16 = th.dtype_limits(ml_dtypes.bfloat16)
  assert bf16.tiny == th.dtype_limits("float32").tiny and bf16.eps == 2**-7
  f64 = th.dtype_limits(np.float64)
  assert f64.log_max == pytest.approx(math.log(f64.max))


def test_overflow_and_underflow_steps():
  assert th.overflow_step(2.0, "float16") == 16
  assert th.overflow_step(-2.0, "float32") == 128
  assert th.overflow_step(2.0, "bfloat16") == 128
  assert th.overflow_step(2.0, "float64") == 1024
  assert th.overflow_step(1.0, "float32") == -1
  assert th.overflow_step(1.0 + 1e-9, "float32") == -1  # rounds to 1
  assert th.underflow_step(0.5, "float32") == 127
  assert th.underflow_step(0.5, "float32", subnormals=True) == 150
  assert th.underflow_step(0.5, "float16", subnormals=True) == 25
  assert th.underflow_step(0.9, "float32", subnormals=True) == -1  # stalls
  assert th.underflow_step(2.0, "float16") == -1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("w", [1.1, 1.37, 3.0])
def test_overflow_step_matches_repeated_multiplication(dtype, w):
  dt = np.dtype(getattr(ml_dtypes, dtype, None) or dtype)
  t = th.overflow_step(w, dtype)
  x = np.asarray(w).astype(dt)
  xs = [x]
  with np.errstate(over="ignore"):
    for _ in range(t):
      xs.append(xs[-1] * x)
  assert np.isfinite(xs[t - 2]) and not np.isfinite(xs[t - 1])


# Bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("call, name", [
    (lambda: th.chi1("tanh", -1.0, 0.0), "sigma_w2"),
    (lambda: th.q_star("tanh", 1.0, -0.1), "sigma_b2"),
    (lambda: th.critical_sigma_w2("tanh", np.nan), "sigma_b2"),
    (lambda: th.rnn_lyapunov_max("tanh", 0.0), "weight_scale"),
    (lambda: th.batchnorm_gradient_rate("relu", 1), "batch_size"),
    (lambda: th.lstm_forget_gradient(1.0, 0), "length"),
    (lambda: th.jacobian_spectrum_moments("tanh", 3, "uniform"), "init"),
    (lambda: th.hanin_gradient_fluctuation([4, 0]), "widths"),
    (lambda: th.overflow_step(2.0, "int32"), "dtype"),
    (lambda: th.residual_log_gradient("relu", 1.0, 0), "depth"),
    (lambda: th.residual_log_gradient("relu", 1.0, 3, width=0), "width"),
    (lambda: th.residual_log_gradient("relu", 1.0, 3, q0=0.0), "q0"),
    (lambda: th.quenched_log_gradient_rate("tanh", 1.0, 0.0, 0), "width"),
    (lambda: th.quenched_log_gradient_rate("tanh", 1.0, 0.0, 4, init="id"),
     "init"),
    (lambda: th.quenched_critical_sigma_w2("tanh", 8, depth=2), "depth"),
    (lambda: th.tied_ordered_rate("relu", 1.0, np.eye(2)), "relu"),
    (lambda: th.tied_ordered_rate("tanh", 1.0, np.ones((2, 3))), "w0"),
    (lambda: th.tied_ordered_rate("tanh", -1.0, np.eye(2)), "weight_scale"),
    (lambda: th.tied_critical_scale("tanh", np.eye(2), bias=np.ones(3)),
     "bias"),
    (lambda: th.sweep_params(ex.rnn.model(4), 0), "seeds"),
    (lambda: th.chi1("swish", 1.0, 0.0), "activation"),
])
def test_bad_input_names_the_argument(call, name):
  with pytest.raises(ValueError, match=name):
    call()
