"""The engine against closed forms, materialised Jacobians and float64."""

import functools

import flax.linen as nn
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exploding as ex


def _probe(key, n, cols=1):
  """The engine's documented probe: float32 normal columns, unit norm."""
  q = np.asarray(jax.random.normal(key, (n, cols), jnp.float32), np.float64)
  return q / np.linalg.norm(q, axis=0)


@pytest.mark.parametrize("w", [0.5, 0.9, 1.1, 2.0, 8.0])
@pytest.mark.parametrize("method", ["jvp", "vjp"])
def test_linear_identity_rnn_grows_as_w_to_the_T(w, method):
  # W = w I: every prefix grows by exactly log w per step, far beyond float32
  # (8^1000 = e^2079); float32 accumulation of 1000 logs: rel. error < 1e-5.
  T = 1000
  p = ex.rnn.init(jax.random.key(0), 8, weight_scale=w, activation="linear",
                  init="identity")
  f = lambda h, x: ex.rnn.step(p, h, x)
  h0 = jnp.ones(8)
  fn = ex.jvp_growth if method == "jvp" else ex.vjp_growth
  g = fn(f, h0, length=T, key=jax.random.key(1))
  t = np.arange(1, T + 1) if method == "jvp" else np.arange(T, 0, -1)
  assert np.all(np.isfinite(g.log_growth))
  np.testing.assert_allclose(g.log_growth, t * np.log(w), rtol=1e-5,
                             atol=1e-5)
  # The state itself is renormalised (linear, no bias: homogeneous).
  assert int(g.overflow_step) == -1
  np.testing.assert_allclose(g.log_state_norm[-1],
                             T * np.log(w) + 0.5 * np.log(8), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_growth_in_every_dtype(dtype, x64):
  # log 2 per step is exact in every format; the sum is kept in >= float32.
  h0 = jnp.ones(4, dtype)
  g = ex.jvp_growth(lambda h, x: 2 * h, h0, length=1000, key=jax.random.key(0))
  np.testing.assert_allclose(g.log_growth[-1], 1000 * np.log(2), rtol=1e-5)
  assert g.log_growth.dtype == jnp.promote_types(dtype, jnp.float32)


def _relu_rnn(dtype="float32", seed=1, hidden=64):
  p = ex.rnn.init(jax.random.key(seed), hidden, weight_scale=2.0,
                  activation="relu", dtype=dtype)
  h0 = jax.random.normal(jax.random.key(2), (hidden,), jnp.float32).astype(dtype)
  return (lambda h, x: ex.rnn.step(p, h, x)), h0


def test_relu_rnn_float32_matches_float64_past_float_range():
  # A non-chaotic instance (seed 1): float32 and float64 trajectories agree.
  f32, h32 = _relu_rnn()
  g32 = ex.jvp_growth(f32, h32, length=1000, key=jax.random.key(3))
  assert np.isfinite(g32.log_growth[-1]) and g32.log_growth[-1] > 89
  with jax.enable_x64(True):
    f64, h64 = _relu_rnn("float64")
    g64 = ex.jvp_growth(f64, h64, length=1000, key=jax.random.key(3))
    np.testing.assert_allclose(g32.log_growth, g64.log_growth, rtol=1e-3)


def test_overflowing_forward_pass_is_flagged_not_vanishing():
  # Forced non-homogeneous: the float32 state overflows. The native product
  # shows XLA's artefact (ReLU backward maps NaN to exact zero gradient),
  # the engine reports NaN from the overflow step on and flags it.
  f, h0 = _relu_rnn()
  g = ex.jvp_growth(f, h0, length=300, key=jax.random.key(3),
                    homogeneous=False, return_native=True)
  s = int(g.overflow_step)
  assert 0 < s < 300
  assert np.all(np.isfinite(g.log_growth[:s]))
  assert np.all(np.isnan(g.log_growth[s:]))
  assert np.any(np.asarray(g.native_norm[s:]) == 0)          # the artefact
  assert np.all(np.asarray(g.native_invalid[s:]))             # ... flagged
  v = ex.vjp_growth(f, h0, length=300, key=jax.random.key(3),
                    homogeneous=False)
  assert int(v.overflow_step) == s and np.all(np.isnan(v.log_growth))
  # Detected automatically as homogeneous: the measurement continues.
  g_auto = ex.jvp_growth(f, h0, length=300, key=jax.random.key(3))
  assert int(g_auto.overflow_step) == -1
  np.testing.assert_allclose(g_auto.log_growth[:s], g.log_growth[:s],
                             rtol=1e-4)


def test_native_norm_is_what_training_sees():
  # The plain float32 norm sqrt(sum v^2) of 2^T v overflows once the
  # squares pass 2^128, near T = 64, long before the entries do (T = 128):
  # an optimiser's global norm is inf there. The log-space growth is not.
  g = ex.jvp_growth(lambda h, x: 2 * h, jnp.ones(4), length=200,
                    key=jax.random.key(0), return_native=True)
  first_inf = int(np.argmax(~np.isfinite(np.asarray(g.native_norm))))
  assert 60 <= first_inf <= 64 and bool(g.native_invalid[first_inf])
  assert np.all(np.isfinite(g.log_growth))
  assert not np.any(np.asarray(g.native_invalid[:first_inf]))
  np.testing.assert_allclose(np.exp(g.log_growth[:first_inf]),
                             g.native_norm[:first_inf], rtol=1e-5)


def _step_jacobians(f, h0, T):
  Js, h = [], h0
  for _ in range(T):
    Js.append(np.asarray(jax.jacfwd(lambda y: f(y, None))(h)))
    h = f(h, None)
  return Js


@pytest.mark.parametrize("act", sorted(ex.activations.ACTIVATIONS))
def test_jvp_and_vjp_match_materialised_jacobians(act, x64):
  H, T = 8, 20
  p = ex.rnn.init(jax.random.key(5), H, weight_scale=1.3, bias_scale=0.2,
                  activation=act, dtype="float64")
  f = lambda h, x: ex.rnn.step(p, h, x)
  h0 = jax.random.normal(jax.random.key(6), (H,), jnp.float64)
  key = jax.random.key(7)
  v = _probe(key, H)[:, 0]
  Js = _step_jacobians(f, h0, T)
  prefix, want = np.eye(H), []
  for J in Js:
    prefix = J @ prefix
    want.append(np.log(np.linalg.norm(prefix @ v)))
  g = ex.jvp_growth(f, h0, length=T, key=key)
  np.testing.assert_allclose(g.log_growth, want, rtol=1e-10, atol=1e-10)
  # The whole product once more, from jax.jacfwd of the unrolled map.
  full = jax.jacfwd(lambda h: ex.rnn.apply(p, h, length=T)[-1])(h0)
  np.testing.assert_allclose(g.log_growth[-1],
                             np.log(np.linalg.norm(full @ v)), rtol=1e-10)
  suffix, want_v = np.eye(H), [None] * T
  for t in range(T - 1, -1, -1):
    suffix = suffix @ Js[t]
    want_v[t] = np.log(np.linalg.norm(v @ suffix))
  gv = ex.vjp_growth(f, h0, length=T, key=key)
  np.testing.assert_allclose(gv.log_growth, want_v, rtol=1e-10, atol=1e-10)


def test_probes_are_independent_columns(getkey):
  f = lambda h, x: jnp.tanh(1.5 * h[::-1] + 0.1)
  g = ex.jvp_growth(f, jnp.linspace(-1, 1, 6), length=10, key=getkey(),
                    probes=3)
  assert g.log_growth.shape == (10, 3)
  assert np.ptp(np.asarray(g.log_growth[-1])) > 0


def test_lyapunov_of_linear_map_is_log_eigenvalue_moduli(x64):
  A = np.diag([2.0, 1.5, 0.9, 0.5, 0.1]) + np.triu(
      np.random.default_rng(0).normal(size=(5, 5)) * 0.3, 1)
  Q = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))[0]
  A = Q @ A @ Q.T                      # eigenvalues 2, 1.5, 0.9, 0.5, 0.1
  f = lambda h, x: jnp.asarray(A) @ h
  ly = ex.lyapunov_spectrum(f, jnp.ones(5), length=3000,
                            key=jax.random.key(0), k=5)
  want = np.sort(np.log(np.abs(np.linalg.eigvals(A))))[::-1]
  np.testing.assert_allclose(ly.exponents, want, atol=2e-3)
  assert ly.cumulative.shape == (3000, 5)
  # Diagonal map: the log entries. The random initial frame costs an O(1)
  # transient in the cumulative sums, so the exponents converge as 1/T.
  d = np.array([3.0, -0.5, 0.25])
  ly = ex.lyapunov_spectrum(lambda h, x: jnp.asarray(d) * h, jnp.ones(3),
                            length=4000, key=jax.random.key(1), k=3)
  np.testing.assert_allclose(ly.exponents, np.log([3.0, 0.5, 0.25]),
                             atol=1e-3)
  np.testing.assert_allclose(np.diff(ly.cumulative[-100:], axis=0),
                             np.tile(np.log([3.0, 0.5, 0.25]), (99, 1)),
                             atol=1e-10)


def test_lyapunov_full_spectrum_finite_when_float32_tanh_saturates():
  # One input saturates the last unit at step t0: in float32 tanh(12) rounds
  # to 1, so tanh' = 1 - tanh^2 is exactly 0 (float64: 2.5e-10) and J_t has
  # a zero last row; QR then left diag R exactly 0 and the smallest
  # exponent read -inf for good. The true product is invertible.
  n, T, t0 = 8, 200, 50
  A = 1.5 * np.linalg.qr(np.random.default_rng(0).normal(size=(n, n)))[0]
  xs = np.zeros((T, n))
  xs[t0, -1] = 12.0

  def spectrum(dtype):
    f = lambda h, x: jnp.tanh(jnp.asarray(A, dtype) @ h + x)
    h0 = jnp.linspace(-1, 1, n, dtype=dtype)
    ly = ex.lyapunov_spectrum(f, h0, jnp.asarray(xs, dtype), k=n,
                              key=jax.random.key(0))
    _, logdet = jax.lax.scan(
        lambda h, x: (f(h, x), jnp.linalg.slogdet(jax.jacfwd(f)(h, x))[1]),
        h0, jnp.asarray(xs, dtype))
    return np.asarray(ly.exponents), np.asarray(logdet)

  e32, _ = spectrum(jnp.float32)
  with jax.enable_x64(True):
    e64, logdet = spectrum(jnp.float64)
  assert np.all(np.isfinite(e32))
  np.testing.assert_allclose(e32[:-1], e64[:-1], atol=1e-5)
  # The zero stretch counts as log(eps ||J Q||) ~ -15 instead of the true
  # log(2.5e-10 ...) ~ -25 once: off by ~10 / T in the smallest exponent.
  np.testing.assert_allclose(e32[-1], e64[-1], atol=0.05)
  # k = n: the exponents sum to the mean log|det J_t| (float64).
  np.testing.assert_allclose(e64.sum(), logdet.mean(), rtol=1e-10)
  np.testing.assert_allclose(e32.sum(), logdet.mean(), atol=0.05)


def test_lyapunov_exactly_singular_jacobian_reads_the_qr_resolution():
  # A zero eigenvalue: log 0 = -inf is below the QR's resolution (its noise
  # is ~eps ||J Q||), wherever the zero sits. An exact 0 on diag R counts
  # log(eps ||R||_F) = log(eps ||diag(2, .5, 0)||_F); -inf only where J Q is
  # exactly zero.
  floor = np.log(np.finfo(np.float32).eps * np.sqrt(4.25))
  for d, atol in (([2.0, 0.5, 0.0], 5e-3), ([0.0, 2.0, 0.5], 0.5),
                  ([0.5, 0.0, 2.0], 0.5)):
    ly = ex.lyapunov_spectrum(lambda h, x, d=d: jnp.asarray(d) * h,
                              jnp.ones(3), length=1000, key=jax.random.key(1),
                              k=3)
    np.testing.assert_allclose(ly.exponents[:2], np.log([2, 0.5]), atol=5e-3)
    np.testing.assert_allclose(ly.exponents[2], floor, atol=atol)
  ly = ex.lyapunov_spectrum(lambda h, x: 0 * h, jnp.ones(3), length=10,
                            key=jax.random.key(1), k=3)
  assert np.all(ly.exponents == -np.inf)


def test_singular_values_of_a_huge_product(x64):
  # tanh RNN, g = 4: the product's singular values span far more than e^40,
  # which no SVD of the materialised product resolves. Exact identity: the
  # log singular values sum to sum_t log|det J_t|.
  H, T = 6, 80
  p = ex.rnn.init(jax.random.key(3), H, weight_scale=4.0, bias_scale=0.5,
                  dtype="float64")
  f = lambda h, x: ex.rnn.step(p, h, x)
  h0 = jax.random.normal(jax.random.key(4), (H,), jnp.float64)
  Js = _step_jacobians(f, h0, T)
  logdet = sum(np.linalg.slogdet(J)[1] for J in Js)
  ls = np.asarray(ex.jacobian_singular_values(f, h0, length=T))
  assert ls[0] - ls[-1] > 40
  np.testing.assert_allclose(ls.sum(), logdet, rtol=1e-8)
  assert np.all(np.diff(ls) <= 0)
  # The top singular value equals the materialised product's norm.
  prod = functools.reduce(lambda a, b: b @ a, Js)
  np.testing.assert_allclose(ls[0], np.log(np.linalg.norm(prod, 2)),
                             rtol=1e-9)


def test_singular_values_match_svd_when_resolvable(x64):
  p = ex.rnn.init(jax.random.key(8), 5, weight_scale=1.1, dtype="float64")
  f = lambda h, x: ex.rnn.step(p, h, x)
  h0 = jnp.linspace(-1, 1, 5)
  Js = _step_jacobians(f, h0, 6)
  prod = functools.reduce(lambda a, b: b @ a, Js)
  want = np.log(np.linalg.svd(prod, compute_uv=False))
  np.testing.assert_allclose(ex.jacobian_singular_values(f, h0, length=6),
                             want, rtol=1e-8)


def test_engine_on_a_flax_cell_matches_our_lstm(getkey):
  hidden, inp, T = 6, 3, 15
  cell = nn.LSTMCell(hidden)
  xs = jax.random.normal(getkey(), (T, inp))
  carry0 = (jnp.zeros(hidden), 0.1 * jnp.ones(hidden))
  params = cell.init(getkey(), carry0, xs[0])
  f = lambda carry, x: cell.apply(params, carry, x)[0]
  key = getkey()
  g = ex.jvp_growth(f, carry0, xs, key=key)
  # The same Jacobian product with an explicit jacfwd on the (c, h) pytree.
  Js, c = [], carry0
  for x in xs:
    flat = lambda v: jnp.concatenate(f((v[:hidden], v[hidden:]), x))
    Js.append(jax.jacfwd(flat)(jnp.concatenate(c)))
    c = f(c, x)
  v = _probe(key, 2 * hidden)[:, 0]
  prod = functools.reduce(lambda a, b: b @ a, Js)
  np.testing.assert_allclose(g.log_growth[-1],
                             np.log(np.linalg.norm(prod @ v)), rtol=1e-4)


def test_mlp_as_transition_over_layers(getkey):
  p = ex.mlp.init(getkey(), 5, 7, weight_scale=1.5, batchnorm=True)
  x = jax.random.normal(getkey(), (4, 5))
  f = lambda h, layer: ex.mlp.step(p, h, layer)
  g = ex.jvp_growth(f, x, ex.mlp.layers(p), key=getkey())
  assert g.log_growth.shape == (7,)
  full = jax.jacfwd(lambda h: ex.mlp.apply(p, h))(x).reshape(20, 20)
  assert g.log_growth[-1] <= np.log(np.linalg.norm(full, 2)) + 1e-4


def test_deterministic(getkey):
  f, h0 = _relu_rnn(hidden=16)
  a = ex.jvp_growth(f, h0, length=50, key=jax.random.key(9))
  b = ex.jvp_growth(f, h0, length=50, key=jax.random.key(9))
  np.testing.assert_array_equal(a.log_growth, b.log_growth)


@hypothesis.given(w=st.floats(0.3, 3.0), T=st.sampled_from([1, 13, 60]),
                  seed=st.integers(0, 2**16))
@hypothesis.settings(max_examples=15, deadline=None)
def test_renormalised_equals_direct_when_finite(w, T, seed):
  with jax.enable_x64(True):
    H = 4
    A = w * jax.random.normal(jax.random.key(seed), (H, H), jnp.float64) / 2
    f = lambda h, x: jnp.tanh(A @ h + 0.1)
    h0 = jnp.linspace(-0.5, 0.5, H)
    key = jax.random.key(seed + 1)
    g = ex.jvp_growth(f, h0, length=T, key=key, return_native=True)
    direct = np.asarray(g.native_norm)
    ok = np.isfinite(direct) & (direct > 0)
    np.testing.assert_allclose(np.exp(g.log_growth)[ok], direct[ok],
                               rtol=1e-9)


def _lin(h, x):
  return 0.5 * h


BAD_ENGINE = [
    (dict(length=0), "length"),
    (dict(length=None), "length"),
    (dict(length=5, probes=0), "probes"),
    (dict(state0=jnp.array([1.0, jnp.nan]), length=3), "state0"),
    (dict(state0=jnp.ones(2, jnp.int32), length=3), "dtype"),
    (dict(xs=jnp.ones((4, 1)), length=5), "length"),
    (dict(xs=jnp.array([[jnp.nan]])), "xs"),
    (dict(f=lambda h, x: h[:1], length=3), "shape"),
    (dict(f=lambda h, x: h.astype(jnp.float16), length=3), "dtype"),
    (dict(f=3, length=3), "callable"),
]


@pytest.mark.parametrize("fn", [ex.jvp_growth, ex.vjp_growth,
                                ex.lyapunov_spectrum])
@pytest.mark.parametrize("kwargs,match", BAD_ENGINE)
def test_engine_rejects_bad_input(fn, kwargs, match):
  kwargs = {"f": _lin, "state0": jnp.ones(2), "key": jax.random.key(0),
            **kwargs}
  if fn is not ex.jvp_growth:
    if "probes" in kwargs:
      return
  f, s = kwargs.pop("f"), kwargs.pop("state0")
  with pytest.raises((ValueError, TypeError), match=match):
    fn(f, s, **kwargs)


def test_lyapunov_rejects_too_many_exponents():
  with pytest.raises(ValueError, match="k must be"):
    ex.lyapunov_spectrum(_lin, jnp.ones(2), length=3, key=jax.random.key(0),
                         k=3)
