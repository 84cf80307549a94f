"""The engine against closed forms, materialised Jacobians and float64.

Every step here is defined once at module level and takes its numbers as
``params``: the engine compiles one program per step function and state
shape, and a new params value never recompiles.
"""

import functools
import logging

import flax.linen as nn
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import exploding as ex


# ------------------------------------------------------------ steps


def _scale(p, h, x):
  """``h -> p * h`` (``p`` a scalar or a diagonal)."""
  del x
  return p * h


def _matvec(p, h, x):
  del x
  return p @ h


def _reverse_tanh(p, h, x):
  del x
  return jnp.tanh(p * h[::-1] + 0.1)


def _tanh_affine(p, h, x):
  """``tanh(A h + b + x)``, ``p = {"A", "b"}``."""
  a = p["A"] @ h + p["b"]
  return jnp.tanh(a if x is None else a + x)


def _relu_affine(p, h, x):
  """``relu(W h + b + x)``, ``p = {"W", "b"}``."""
  a = p["W"] @ h + p["b"]
  return jax.nn.relu(a if x is None else a + x)


def _bias_free(p):
  return p.bias_scale == 0


_LSTM_CELL = nn.LSTMCell(6)


def _flax_lstm_step(p, carry, x):
  return _LSTM_CELL.apply(p, carry, x)[0]


_SIMPLE_CELL = nn.SimpleCell(features=6, dtype=jnp.float64,
                             param_dtype=jnp.float64)


def _flax_simple_step(p, h, x):
  """A flax ``SimpleCell`` with its recurrent kernel scaled by a knob."""
  cell = dict(p["cell"], h={"kernel": p["weight_scale"]
                            * p["cell"]["h"]["kernel"]})
  return _SIMPLE_CELL.apply({"params": cell}, h, x)[0]


# ------------------------------------------------------------ brute force


def _probe(key, n, cols=1):
  """The engine's documented probe: float32 normal columns, unit norm."""
  key = jax.random.key(key) if isinstance(key, int) else key
  q = np.asarray(jax.random.normal(key, (n, cols), jnp.float32), np.float64)
  return q / np.linalg.norm(q, axis=0)


def _step_jacobians(step, p, state0, xs=None, length=None):
  """``(T, n, n)`` Jacobians ``J_t`` of each step along the trajectory, by
  ``jax.jacfwd`` on the raveled state (the engine's leaf order)."""
  return np.asarray(_jacobians_program(step, p, state0, xs, length))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _jacobians_program(step, p, state0, xs, length):
  flat0, unravel = ravel_pytree(state0)
  f = lambda v, x: ravel_pytree(step(p, unravel(v), x))[0]
  body = lambda v, x: (f(v, x), jax.jacfwd(f)(v, x))
  return jax.lax.scan(body, flat0, xs, length=length)[1]


def _forward_logs(Js, v):
  """``log ||J_t ... J_1 v||`` for every t (no rescaling: within range)."""
  out = []
  for J in Js:
    v = J @ v
    out.append(np.log(np.linalg.norm(v)))
  return np.array(out)


def _backward_logs(Js, u):
  """``log ||u J_T ... J_{T-t}||``: index t holds t + 1 factors from the
  end, as ``vjp_growth`` indexes."""
  out = []
  for J in Js[::-1]:
    u = u @ J
    out.append(np.log(np.linalg.norm(u)))
  return np.array(out)


def _product(Js):
  return functools.reduce(lambda a, b: b @ a, Js)


# ------------------------------------------------------------ closed forms


@pytest.mark.parametrize("w", [0.5, 0.9, 1.1, 2.0, 8.0])
@pytest.mark.parametrize("method", ["jvp", "vjp"])
def test_linear_identity_rnn_grows_as_w_to_the_T(w, method):
  # W = w I: every prefix grows by exactly log w per step, far beyond float32
  # (8^1000 = e^2079); float32 accumulation of 1000 logs: rel. error < 1e-5.
  T = 1000
  p = ex.rnn.init(jax.random.key(0), 8, weight_scale=w, activation="linear",
                  init="identity")
  fn = ex.jvp_growth if method == "jvp" else ex.vjp_growth
  g = fn(ex.rnn.step, p, jnp.ones(8), length=T, key=jax.random.key(1),
         homogeneous=True)
  assert np.all(np.isfinite(g.log_growth))
  np.testing.assert_allclose(g.log_growth, np.arange(1, T + 1) * np.log(w),
                             rtol=1e-5, atol=1e-5)
  # The state itself is renormalised (declared homogeneous: linear, no bias).
  assert int(g.overflow_step) == -1
  np.testing.assert_allclose(g.log_state_norm[-1],
                             T * np.log(w) + 0.5 * np.log(8), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_growth_in_every_dtype(dtype, x64):
  # log 2 per step is exact in every format; the sum is kept in >= float32.
  g = ex.jvp_growth(_scale, 2.0, jnp.ones(4, dtype), length=1000,
                    key=jax.random.key(0), homogeneous=True)
  np.testing.assert_allclose(g.log_growth[-1], 1000 * np.log(2), rtol=1e-5)
  assert g.log_growth.dtype == jnp.promote_types(dtype, jnp.float32)


def _relu_rnn(dtype="float32", seed=1, hidden=64):
  p = ex.rnn.init(jax.random.key(seed), hidden, weight_scale=2.0,
                  activation="relu", dtype=dtype)
  h0 = jax.random.normal(jax.random.key(2), (hidden,), jnp.float32)
  return p, h0.astype(dtype)


def test_relu_rnn_float32_matches_float64_past_float_range():
  # A non-chaotic instance (seed 1): float32 and float64 trajectories agree.
  p32, h32 = _relu_rnn()
  g32 = ex.jvp_growth(ex.rnn.step, p32, h32, length=1000,
                      key=jax.random.key(3), homogeneous=True)
  assert np.isfinite(g32.log_growth[-1]) and g32.log_growth[-1] > 89
  with jax.enable_x64(True):
    p64, h64 = _relu_rnn("float64")
    g64 = ex.jvp_growth(ex.rnn.step, p64, h64, length=1000,
                        key=jax.random.key(3), homogeneous=True)
    np.testing.assert_allclose(g32.log_growth, g64.log_growth, rtol=1e-3)


def test_overflowing_forward_pass_is_flagged_not_vanishing():
  # Not declared homogeneous: the float32 state overflows. The native
  # product shows XLA's artefact (ReLU backward maps NaN to an exact zero
  # gradient); the engine reports NaN from the overflow step on and flags it.
  p, h0 = _relu_rnn()
  g = ex.jvp_growth(ex.rnn.step, p, h0, length=300, key=jax.random.key(3),
                    homogeneous=False, return_native=True)
  s = int(g.overflow_step)
  assert 0 < s < 300
  assert np.all(np.isfinite(g.log_growth[:s]))
  assert np.all(np.isnan(g.log_growth[s:]))
  assert np.any(np.asarray(g.native_norm[s:]) == 0)          # the artefact
  assert np.all(np.asarray(g.native_invalid[s:]))             # ... flagged
  v = ex.vjp_growth(ex.rnn.step, p, h0, length=300, key=jax.random.key(3))
  assert int(v.overflow_step) == s and np.all(np.isnan(v.log_growth))
  ly = ex.lyapunov_spectrum(ex.rnn.step, p, h0, length=300,
                            key=jax.random.key(3))
  assert int(ly.overflow_step) == s
  assert np.all(np.isnan(ly.cumulative[s:])) and np.isnan(ly.exponents[0])
  # Declared homogeneous: the measurement continues past float range.
  g_hom = ex.jvp_growth(ex.rnn.step, p, h0, length=300, key=jax.random.key(3),
                        homogeneous=True)
  assert int(g_hom.overflow_step) == -1
  assert np.all(np.isfinite(g_hom.log_growth))
  assert g_hom.log_state_norm[-1] > np.log(np.finfo(np.float32).max)
  np.testing.assert_allclose(g_hom.log_growth[:s], g.log_growth[:s],
                             rtol=1e-4)


def test_native_norm_is_what_training_sees():
  # The plain float32 norm sqrt(sum v^2) of 2^T v overflows once the
  # squares pass 2^128, near T = 64, long before the entries do (T = 128):
  # an optimiser's global norm is inf there. The log-space growth is not.
  g = ex.jvp_growth(_scale, 2.0, jnp.ones(4), length=200,
                    key=jax.random.key(0), homogeneous=True,
                    return_native=True)
  first_inf = int(np.argmax(~np.isfinite(np.asarray(g.native_norm))))
  assert 60 <= first_inf <= 64 and bool(g.native_invalid[first_inf])
  assert np.all(np.isfinite(g.log_growth))
  assert not np.any(np.asarray(g.native_invalid[:first_inf]))
  np.testing.assert_allclose(np.exp(g.log_growth[:first_inf]),
                             g.native_norm[:first_inf], rtol=1e-5)


def test_state_norm_is_exact_up_to_the_overflow():
  # 0.2 scaled by 1 / max|h|, which XLA CPU flushes to 0 for max > 2^126,
  # and read a zero state (-inf) just before the overflow.
  # h_{t+1} = 2^(t+1) (1, 1, 1, 1): log ||h_{t+1}|| = (t + 2) log 2 while
  # finite; 2^128 overflows float32 at t = 127.
  g = ex.jvp_growth(_scale, 2.0, jnp.ones(4), length=130, key=0)
  assert int(g.overflow_step) == 127
  np.testing.assert_allclose(g.log_state_norm[:127],
                             (np.arange(127) + 2) * np.log(2), rtol=1e-6)


# ------------------------------------------------- materialised Jacobians


@pytest.mark.parametrize("act", sorted(ex.activations.ACTIVATIONS))
def test_jvp_and_vjp_match_materialised_jacobians(act, x64):
  H, T = 8, 20
  p = ex.rnn.init(jax.random.key(5), H, weight_scale=1.3, bias_scale=0.2,
                  activation=act, dtype="float64")
  h0 = jax.random.normal(jax.random.key(6), (H,), jnp.float64)
  key = jax.random.key(7)
  v = _probe(key, H)[:, 0]
  Js = _step_jacobians(ex.rnn.step, p, h0, length=T)
  g = ex.jvp_growth(ex.rnn.step, p, h0, length=T, key=key)
  np.testing.assert_allclose(g.log_growth, _forward_logs(Js, v), rtol=1e-10,
                             atol=1e-10)
  # The whole product once more, from jax.jacfwd of the unrolled map.
  full = jax.jacfwd(lambda h: ex.rnn.apply(p, h, length=T)[-1])(h0)
  np.testing.assert_allclose(g.log_growth[-1],
                             np.log(np.linalg.norm(full @ v)), rtol=1e-10)
  np.testing.assert_allclose(g.log_state_norm,
                             np.log(np.linalg.norm(
                                 ex.rnn.apply(p, h0, length=T), axis=1)),
                             rtol=1e-10)
  gv = ex.vjp_growth(ex.rnn.step, p, h0, length=T, key=key)
  np.testing.assert_allclose(gv.log_growth, _backward_logs(Js, v),
                             rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(gv.log_growth[-1],
                             np.log(np.linalg.norm(v @ full)), rtol=1e-10)


def test_probes_are_independent_columns(getkey):
  key = getkey()
  g = ex.jvp_growth(_reverse_tanh, 1.5, jnp.linspace(-1, 1, 6), length=10,
                    key=key, probes=3)
  assert g.log_growth.shape == (10, 3)
  assert np.ptp(np.asarray(g.log_growth[-1])) > 0
  # Column j is the growth of the j-th documented probe.
  Js = _step_jacobians(_reverse_tanh, 1.5, jnp.linspace(-1, 1, 6), length=10)
  V = _probe(key, 6, 3)
  for j in range(3):
    np.testing.assert_allclose(g.log_growth[:, j], _forward_logs(Js, V[:, j]),
                               rtol=1e-4, atol=1e-5)


# ------------------------------------- cases automatic detection got wrong


@functools.lru_cache(maxsize=None)
def _undetected(case):
  """Transitions that look homogeneous at ``h_0`` (or at ``x_0``) and are
  not. Returns ``(step, params, h0, xs, T, truth)``; ``truth`` holds the
  float64 brute-force forward and backward curves for probe key 7 and the
  final value from the materialised whole product. Call under x64."""
  n, T = 64, 300
  ks = jax.random.split(jax.random.key(11), 3)
  if case == "vanishing_relu_huge_state":
    # ||W h_0|| ~ 1e4 swamps the bias 1 at h_0, not along the way.
    p = {"W": jax.random.normal(ks[0], (n, n), jnp.float64) / 8,
         "b": jnp.ones(n)}
    step, xs = _relu_affine, None
    h0 = 1e4 * jax.random.normal(ks[1], (n,), jnp.float64)
  elif case == "tanh_tiny_state":
    # tanh is linear near 0; the trajectory leaves 0 (g = 2: chaotic).
    p = ex.rnn.init(ks[0], n, weight_scale=2.0, dtype="float64")
    step, xs = ex.rnn.step, None
    h0 = 1e-3 * jax.random.normal(ks[1], (n,), jnp.float64)
  else:
    # relu(W h + x) is homogeneous for x_0 = 0 only.
    assert case == "relu_zero_first_input"
    p = {"W": 1.5 * jax.random.normal(ks[0], (n, n), jnp.float64)
              / np.sqrt(n), "b": jnp.zeros(n)}
    step = _relu_affine
    xs = jax.random.normal(ks[2], (T, n), jnp.float64).at[0].set(0.0)
    h0 = jax.random.normal(ks[1], (n,), jnp.float64)
  Js = _step_jacobians(step, p, h0, xs, length=T)
  v = _probe(7, n)[:, 0]
  prod = _product(Js)
  truth = {"jvp": _forward_logs(Js, v), "vjp": _backward_logs(Js, v),
           "jvp_final": np.log(np.linalg.norm(prod @ v)),
           "vjp_final": np.log(np.linalg.norm(v @ prod))}
  return step, p, h0, xs, T, truth


_UNDETECTED = ["vanishing_relu_huge_state", "tanh_tiny_state",
               "relu_zero_first_input"]


@pytest.mark.parametrize("method", ["jvp", "vjp", "lyapunov"])
@pytest.mark.parametrize("case", _UNDETECTED)
def test_not_homogeneous_by_default_gives_the_brute_force_growth(
    case, method, x64):
  # The default homogeneous=False measures these exactly. Declaring them
  # homogeneous (what the old automatic detection concluded from h_0, x_0)
  # renormalises the state and is off by > 10 nats on each.
  step, p, h0, xs, T, truth = _undetected(case)
  if method == "vjp":
    g = ex.vjp_growth(step, p, h0, xs, length=T, key=7)
    curve, want = g.log_growth, truth["vjp"]
  else:
    if method == "jvp":
      g = ex.jvp_growth(step, p, h0, xs, length=T, key=7)
      curve = g.log_growth
    else:
      # k = 1: the frame is the jvp's probe (up to sign) and |R_t| is the
      # stretch, so the cumulative sum is the same exact curve.
      g = ex.lyapunov_spectrum(step, p, h0, xs, length=T, key=7, k=1)
      curve = g.cumulative[:, 0]
      np.testing.assert_allclose(g.exponents[0], truth["jvp"][-1] / T,
                                 rtol=1e-6)
    want = truth["jvp"]
  assert int(g.overflow_step) == -1
  np.testing.assert_allclose(curve, want, rtol=1e-6, atol=1e-9)
  final = truth["vjp_final" if method == "vjp" else "jvp_final"]
  np.testing.assert_allclose(curve[-1], final, rtol=1e-4)
  if case == "vanishing_relu_huge_state":
    assert final < -40                                   # vanishing
  if method == "jvp":
    # What declaring (wrongly) homogeneous measures instead.
    wrong = ex.jvp_growth(step, p, h0, xs, length=T, key=7, homogeneous=True)
    assert abs(float(wrong.log_growth[-1]) - final) > 10


# ------------------------------------------------------------ Lyapunov


def test_lyapunov_of_linear_map_is_log_eigenvalue_moduli(x64):
  A = np.diag([2.0, 1.5, 0.9, 0.5, 0.1]) + np.triu(
      np.random.default_rng(0).normal(size=(5, 5)) * 0.3, 1)
  Q = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))[0]
  A = Q @ A @ Q.T                      # eigenvalues 2, 1.5, 0.9, 0.5, 0.1
  ly = ex.lyapunov_spectrum(_matvec, jnp.asarray(A), jnp.ones(5),
                            length=3000, key=jax.random.key(0), k=5,
                            homogeneous=True)
  want = np.sort(np.log(np.abs(np.linalg.eigvals(A))))[::-1]
  np.testing.assert_allclose(ly.exponents, want, atol=2e-3)
  assert ly.cumulative.shape == (3000, 5)
  # Diagonal map: the log entries. The random initial frame costs an O(1)
  # transient in the cumulative sums, so the exponents converge as 1/T.
  d = np.array([3.0, -0.5, 0.25])
  ly = ex.lyapunov_spectrum(_scale, jnp.asarray(d), jnp.ones(3), length=4000,
                            key=jax.random.key(1), k=3, homogeneous=True)
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
    p = {"A": jnp.asarray(A, dtype), "b": jnp.zeros(n, dtype)}
    h0 = jnp.linspace(-1, 1, n, dtype=dtype)
    ly = ex.lyapunov_spectrum(_tanh_affine, p, h0, jnp.asarray(xs, dtype),
                              k=n, key=jax.random.key(0))
    Js = _step_jacobians(_tanh_affine, p, h0, jnp.asarray(xs, dtype))
    return np.asarray(ly.exponents), np.linalg.slogdet(Js)[1]

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
    ly = ex.lyapunov_spectrum(_scale, jnp.asarray(d), jnp.ones(3),
                              length=1000, key=jax.random.key(1), k=3,
                              homogeneous=True)
    np.testing.assert_allclose(ly.exponents[:2], np.log([2, 0.5]), atol=5e-3)
    np.testing.assert_allclose(ly.exponents[2], floor, atol=atol)
  ly = ex.lyapunov_spectrum(_scale, jnp.zeros(3), jnp.ones(3), length=10,
                            key=jax.random.key(1), k=3, homogeneous=True)
  assert np.all(ly.exponents == -np.inf)


# ------------------------------------------------------------ singular values


def test_singular_values_of_a_huge_product(x64):
  # tanh RNN, g = 4: the product's singular values span far more than e^40,
  # which no SVD of the materialised product resolves. Exact identity: the
  # log singular values sum to sum_t log|det J_t|.
  H, T = 6, 80
  p = ex.rnn.init(jax.random.key(3), H, weight_scale=4.0, bias_scale=0.5,
                  dtype="float64")
  h0 = jax.random.normal(jax.random.key(4), (H,), jnp.float64)
  Js = _step_jacobians(ex.rnn.step, p, h0, length=T)
  logdet = np.linalg.slogdet(Js)[1].sum()
  ls = np.asarray(ex.jacobian_singular_values(ex.rnn.step, p, h0, length=T))
  assert ls[0] - ls[-1] > 40
  np.testing.assert_allclose(ls.sum(), logdet, rtol=1e-8)
  assert np.all(np.diff(ls) <= 0)
  # The top singular value equals the materialised product's norm.
  np.testing.assert_allclose(ls[0], np.log(np.linalg.norm(_product(Js), 2)),
                             rtol=1e-9)


def test_singular_values_match_svd_when_resolvable(x64):
  p = ex.rnn.init(jax.random.key(8), 5, weight_scale=1.1, dtype="float64")
  h0 = jnp.linspace(-1, 1, 5)
  Js = _step_jacobians(ex.rnn.step, p, h0, length=6)
  want = np.log(np.linalg.svd(_product(Js), compute_uv=False))
  np.testing.assert_allclose(
      ex.jacobian_singular_values(ex.rnn.step, p, h0, length=6), want,
      rtol=1e-8)


# ------------------------------------------------------------ flax cells


def test_engine_on_a_flax_lstm_cell(getkey):
  hidden, inp, T = 6, 3, 15
  xs = jax.random.normal(getkey(), (T, inp))
  carry0 = (jnp.zeros(hidden), 0.1 * jnp.ones(hidden))
  params = _LSTM_CELL.init(getkey(), carry0, xs[0])
  key = getkey()
  g = ex.jvp_growth(_flax_lstm_step, params, carry0, xs, key=key)
  # The same Jacobian product with an explicit jacfwd on the (c, h) pytree.
  Js = _step_jacobians(_flax_lstm_step, params, carry0, xs)
  v = _probe(key, 2 * hidden)[:, 0]
  np.testing.assert_allclose(g.log_growth[-1],
                             np.log(np.linalg.norm(_product(Js) @ v)),
                             rtol=1e-4)
  np.testing.assert_allclose(g.log_growth, _forward_logs(Js, v), rtol=1e-4,
                             atol=1e-5)


def test_engine_on_a_flax_simple_cell_with_params_as_data(x64):
  n, inp, T = 6, 2, 25
  ks = jax.random.split(jax.random.key(21), 4)
  xs = jax.random.normal(ks[0], (T, inp), jnp.float64)
  h0 = jax.random.normal(ks[1], (n,), jnp.float64)
  cell = _SIMPLE_CELL.init(ks[2], h0, xs[0])["params"]
  v = _probe(ks[3], n)[:, 0]
  for g in (0.7, 2.5):
    p = {"cell": cell, "weight_scale": jnp.asarray(g, jnp.float64)}
    Js = _step_jacobians(_flax_simple_step, p, h0, xs)
    jv = ex.jvp_growth(_flax_simple_step, p, h0, xs, key=ks[3])
    np.testing.assert_allclose(jv.log_growth, _forward_logs(Js, v),
                               rtol=1e-10, atol=1e-10)
    vj = ex.vjp_growth(_flax_simple_step, p, h0, xs, key=ks[3])
    np.testing.assert_allclose(vj.log_growth, _backward_logs(Js, v),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(jv.log_growth[-1],
                               np.log(np.linalg.norm(_product(Js) @ v)),
                               rtol=1e-10)


def test_mlp_as_transition_over_layers(getkey):
  p = ex.mlp.init(getkey(), 5, 7, weight_scale=1.5, batchnorm=True)
  x = jax.random.normal(getkey(), (4, 5))
  key = getkey()
  g = ex.jvp_growth(ex.mlp.step, p, x, ex.mlp.layers(p), key=key)
  assert g.log_growth.shape == (7,)
  full = np.asarray(jax.jit(jax.jacfwd(ex.mlp.apply, 1))(p, x)).reshape(20, 20)
  assert g.log_growth[-1] <= np.log(np.linalg.norm(full, 2)) + 1e-4
  np.testing.assert_allclose(g.log_growth[-1],
                             np.log(np.linalg.norm(full @ _probe(key, 20))),
                             rtol=1e-4)


def test_deterministic():
  p, h0 = _relu_rnn(hidden=16)
  a = ex.jvp_growth(ex.rnn.step, p, h0, length=50, key=jax.random.key(9))
  b = ex.jvp_growth(ex.rnn.step, p, h0, length=50, key=9)   # the same key
  np.testing.assert_array_equal(a.log_growth, b.log_growth)


@hypothesis.given(w=st.floats(0.3, 3.0), T=st.sampled_from([1, 13, 60]),
                  seed=st.integers(0, 2**16))
@hypothesis.settings(max_examples=15, deadline=None)
def test_renormalised_equals_direct_when_finite(w, T, seed):
  with jax.enable_x64(True):
    H = 4
    A = w * jax.random.normal(jax.random.key(seed), (H, H), jnp.float64) / 2
    p = {"A": A, "b": jnp.full(H, 0.1)}
    h0 = jnp.linspace(-0.5, 0.5, H)
    key = jax.random.key(seed + 1)
    for fn in (ex.jvp_growth, ex.vjp_growth):
      g = fn(_tanh_affine, p, h0, length=T, key=key, return_native=True)
      direct = np.asarray(g.native_norm)
      ok = np.isfinite(direct) & (direct > 0)
      np.testing.assert_allclose(np.exp(g.log_growth)[ok], direct[ok],
                                 rtol=1e-9)


# ------------------------------------------ params are data: jit, vmap, grad


def _mapped_case(name):
  """``(step, params, state0, xs, length, homogeneous, knobs)`` in float64;
  ``knobs`` maps a knob name to its values at the points of a map."""
  k1, k2 = jax.random.split(jax.random.key(4))
  gs = jnp.array([0.5, 1.0, 3.0])
  if name == "tanh_rnn":
    p = ex.rnn.init(k1, 8, bias_scale=0.3, dtype="float64")
    return (ex.rnn.step, p, jax.random.normal(k2, (8,), jnp.float64), None,
            40, False, {"weight_scale": gs})
  if name == "relu_rnn_renormalised":
    # Homogeneous where the bias is 0, decided per point: (8, 0) runs past
    # float64 range, (8, 0.5) overflows (near step 500) and is flagged.
    p = ex.rnn.init(k1, 8, activation="relu", dtype="float64")
    return (ex.rnn.step, p, jax.random.normal(k2, (8,), jnp.float64), None,
            600, _bias_free, {"weight_scale": jnp.array([0.5, 1.0, 8.0, 8.0]),
                              "bias_scale": jnp.array([0.0, 0.0, 0.0, 0.5])})
  if name == "relu_rnn_overflow":
    p = ex.rnn.init(k1, 8, activation="relu", dtype="float64")
    return (ex.rnn.step, p, jax.random.normal(k2, (8,), jnp.float64), None,
            600, False, {"weight_scale": jnp.array([0.5, 1.0, 8.0])})
  if name == "lstm":
    p = ex.lstm.init(k1, 6, bias_scale=0.3, dtype="float64")
    return (ex.lstm.step, p, tuple(jax.random.normal(k2, (2, 6), jnp.float64)),
            None, 40, False, {"weight_scale": gs})
  assert name == "mlp_batchnorm"
  p = ex.mlp.init(k1, 6, 12, bias_scale=0.2, batchnorm=True, dtype="float64")
  return (ex.mlp.step, p, jax.random.normal(k2, (4, 6), jnp.float64),
          ex.mlp.layers(p), None, False, {"weight_scale": gs})


_MEASURE = {"jvp": (ex.jvp_growth, {}), "vjp": (ex.vjp_growth, {}),
            "lyapunov": (ex.lyapunov_spectrum, {"k": 2})}


@pytest.mark.parametrize("method", sorted(_MEASURE))
@pytest.mark.parametrize("case", ["tanh_rnn", "relu_rnn_renormalised",
                                  "relu_rnn_overflow", "lstm",
                                  "mlp_batchnorm"])
def test_jit_and_vmap_over_knobs_equal_eager(case, method, x64):
  step, p, state0, xs, T, hom, knobs = _mapped_case(case)
  fn, kw = _MEASURE[method]

  def measure(kv):
    return fn(step, p.replace(**kv), state0, xs, length=T, key=3,
              homogeneous=hom, **kw)

  n = len(next(iter(knobs.values())))
  eager = [measure({k: v[i] for k, v in knobs.items()}) for i in range(n)]
  mapped = jax.jit(jax.vmap(measure))(knobs)
  for i, e in enumerate(eager):
    for field, want in e._asdict().items():
      if want is None:
        assert getattr(mapped, field) is None
        continue
      got = np.asarray(getattr(mapped, field)[i])
      if field == "overflow_step":
        assert int(got) == int(want), (i, field)
      else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9,
                                   err_msg=f"point {i}: {field}")
  steps = [int(e.overflow_step) for e in eager]
  if case == "relu_rnn_renormalised":
    assert steps[:3] == [-1, -1, -1] and steps[3] > 0
    assert eager[2].log_state_norm[-1] > np.log(np.finfo(np.float64).max)
  elif case == "relu_rnn_overflow":
    assert steps[:2] == [-1, -1] and 0 < steps[2] < T
    assert np.all(np.isnan(np.asarray(mapped.log_state_norm[2, steps[2]:])))
  else:
    assert steps == [-1] * n


class _CompileCounter(logging.Handler):
  """Counts jax's "Compiling ..." log records (under ``jax.log_compiles``)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.count = 0

  def emit(self, record):
    if record.getMessage().startswith("Compiling"):
      self.count += 1


def _counted_step(p, h, x):
  """A ReLU RNN step used by the compile-count test alone (so the first
  call of each method compiles, whatever ran before)."""
  del x
  return jax.nn.relu(p.weight_scale * (p.W0 @ h) + p.bias_scale * p.b0)


@pytest.mark.parametrize("method", sorted(_MEASURE))
def test_new_params_values_compile_nothing(method):
  # New weight and bias scales (homogeneous at some, not at others: decided
  # from params inside the program) and new keys: no new program.
  fn, kw = _MEASURE[method]
  p = ex.rnn.init(jax.random.key(0), 8, activation="relu")
  h0 = jnp.ones(8)
  counter = _CompileCounter()
  logger = logging.getLogger("jax")
  logger.addHandler(counter)
  try:
    with jax.log_compiles():
      fn(_counted_step, p, h0, length=10, key=0, homogeneous=_bias_free, **kw)
      assert counter.count >= 1              # the counter hears compiles
      counter.count = 0
      for i, (g, sb) in enumerate([(0.5, 0.0), (1.5, 0.3), (2.5, 0.0),
                                   (3.0, 1.0)]):
        q = p.replace(weight_scale=jnp.float32(g), bias_scale=jnp.float32(sb))
        jax.block_until_ready(fn(_counted_step, q, h0, length=10, key=i + 1,
                                 homogeneous=_bias_free, **kw))
      assert counter.count == 0
  finally:
    logger.removeHandler(counter)


@pytest.mark.parametrize("method", ["jvp", "vjp"])
def test_grad_of_growth_matches_finite_differences(method, x64):
  p = ex.rnn.init(jax.random.key(0), 8, bias_scale=0.3, dtype="float64")
  h0 = jax.random.normal(jax.random.key(1), (8,), jnp.float64)
  fn = ex.jvp_growth if method == "jvp" else ex.vjp_growth

  def final_growth(g):
    return fn(ex.rnn.step, p.replace(weight_scale=g), h0, length=30,
              key=2).log_growth[-1]

  g0, eps = jnp.float64(1.7), 1e-5
  fd = (final_growth(g0 + eps) - final_growth(g0 - eps)) / (2 * eps)
  np.testing.assert_allclose(jax.grad(final_growth)(g0), fd, rtol=1e-5)


def test_grad_of_renormalised_relu_growth_is_T_over_g(x64):
  # No bias: the ReLU pattern does not depend on g > 0, so the growth is
  # T log g + const and its derivative T / g, through the renormalisation.
  p = ex.rnn.init(jax.random.key(0), 8, activation="relu", dtype="float64")
  h0 = jax.random.normal(jax.random.key(1), (8,), jnp.float64)
  T, g0 = 300, 3.0
  final_growth = lambda g: ex.jvp_growth(
      ex.rnn.step, p.replace(weight_scale=g), h0, length=T, key=2,
      homogeneous=True).log_growth[-1]
  np.testing.assert_allclose(jax.grad(final_growth)(jnp.float64(g0)), T / g0,
                             rtol=1e-10)


# ------------------------------------------------------------ bad input


def _lin(p, h, x):
  del x
  return p * h


_ALL = ("jvp", "vjp", "lyapunov")

BAD_ENGINE = [
    (_ALL, dict(length=0), "length"),
    (_ALL, dict(length=None), "length"),
    (_ALL, dict(length=3.0), "length"),
    (("jvp",), dict(length=5, probes=0), "probes"),
    (("lyapunov",), dict(length=5, k=0), "k must be"),
    (("lyapunov",), dict(length=5, k=3), "k must be <= the state size 2"),
    (_ALL, dict(state0=jnp.array([1.0, jnp.nan]), length=3), "state0"),
    (_ALL, dict(state0=jnp.ones(2, jnp.int32), length=3), "dtype"),
    (_ALL, dict(state0=jnp.ones(2, jnp.complex64), length=3), "real floating"),
    (_ALL, dict(state0=jnp.ones(0), length=3), "at least one entry"),
    (_ALL, dict(state0=(), length=3), "at least one array"),
    (_ALL, dict(params=jnp.nan, length=3), "params"),
    (_ALL, dict(xs=jnp.ones((4, 1)), length=5), "length"),
    (_ALL, dict(xs=jnp.array([[jnp.nan]])), "xs"),
    (_ALL, dict(xs=(jnp.ones((3, 2)), jnp.ones((4, 2)))), "leading axis"),
    (_ALL, dict(step=lambda p, h, x: h[:1], length=3), "shape"),
    (_ALL, dict(step=lambda p, h, x: h.astype(jnp.float16), length=3),
     "dtype"),
    (_ALL, dict(step=lambda p, h, x: h.astype(jnp.int32), length=3),
     "dtype"),
    (_ALL, dict(step=3, length=3), "callable"),
    (_ALL, dict(key=True, length=3), "key"),
    (_ALL, dict(key=-1, length=3), "key"),
    (_ALL, dict(key=jnp.ones(3), length=3), "key"),
    (_ALL, dict(homogeneous="no", length=3), "homogeneous"),
    (_ALL, dict(homogeneous=lambda p: 1.0, length=3), "homogeneous"),
    (_ALL, dict(precision="fast", length=3), "precision"),
]


@pytest.mark.parametrize("method,kwargs,match", [
    (m, kwargs, match) for methods, kwargs, match in BAD_ENGINE
    for m in methods])
def test_engine_rejects_bad_input(method, kwargs, match):
  fn, _ = _MEASURE[method]
  kwargs = {"step": _lin, "params": 0.5, "state0": jnp.ones(2), "key": 0,
            **kwargs}
  step, params, state0 = (kwargs.pop(k) for k in ("step", "params", "state0"))
  with pytest.raises((ValueError, TypeError), match=match):
    fn(step, params, state0, **kwargs)


def test_singular_values_reject_bad_input():
  with pytest.raises(ValueError, match="sweeps"):
    ex.jacobian_singular_values(_lin, 0.5, jnp.ones(2), length=3, sweeps=0)
  with pytest.raises(ValueError, match="give xs or length"):
    ex.jacobian_singular_values(_lin, 0.5, jnp.ones(2))
