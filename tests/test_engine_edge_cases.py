"""Edge cases of the engine and maps reported against 0.1 (issue 13)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exploding as ex


def _dead_relu_step(W, h, x):
  del x
  return jax.nn.relu(W @ h + 0.3)


def test_singular_values_with_a_dead_relu_unit(x64):
  # An exactly zero singular value (a dead unit) made 0.1's convergence test
  # NaN and stopped after one sweep: top log sigma -29.14 vs -26.92 (SVD).
  W = 1.3 * jax.random.normal(jax.random.key(0), (6, 6), jnp.float64)
  W = W / np.sqrt(6)
  h0 = jax.random.normal(jax.random.key(1), (6,), jnp.float64)
  T = 40
  Js, h = [], h0
  for _ in range(T):
    Js.append(np.asarray(jax.jacfwd(lambda y: _dead_relu_step(W, y, None))(h)))
    h = _dead_relu_step(W, h, None)
  prod = functools.reduce(lambda a, b: b @ a, Js)
  with np.errstate(divide="ignore"):
    want = np.log(np.linalg.svd(prod, compute_uv=False))
  got = np.asarray(ex.jacobian_singular_values(_dead_relu_step, W, h0,
                                               length=T))
  resolved = np.isfinite(want) & (want > want[0] - 25)
  assert resolved.sum() >= 1
  np.testing.assert_allclose(got[resolved], want[resolved], rtol=1e-6)


def test_rate_reports_how_many_seeds_entered():
  # A ReLU net with bias is not homogeneous: seeds whose state overflows
  # early drop out of the mean; return_count says how many remained.
  m = ex.sweep("rnn", weight_scales=[0.5, 3.0], length=200, seeds=4,
               hidden=16, activation="relu", bias_scale=0.5, progress=False)
  rate, n = m.rate(return_count=True)
  assert n.shape == (2,) and n[0] == 4
  overflowed = np.sum(m.overflow_step[1] >= 0)
  assert overflowed >= 1 and n[1] <= 4
  np.testing.assert_array_equal(rate, m.rate())


# ------------------------------------------- carried-scale row norms


def _float32_states(step, h0, xs):
  """The float32 states the engine propagates, and their float64 log
  norms (-inf for an exactly zero state)."""
  h, logs = np.asarray(h0, np.float32), []
  for x in xs:
    h = np.asarray(step(None, jnp.asarray(h), jnp.asarray(x)))
    with np.errstate(divide="ignore"):
      logs.append(np.log(np.linalg.norm(h.astype(np.float64))))
  return np.array(logs)


@pytest.mark.parametrize("factors", [
    # jumps of 2^60..2^100 in one step, both ways (the carried scale is
    # wrong for the step after a jump: the branch must catch it)
    [1e30, 1e-30, 1e-30, 1e30, 1e18, 1e-36, 1.0, 3.0],
    # decays through every scale down to exact zero (flushed), then back
    # up from zero in one step, by tiny and by huge amounts
    [1e-10] * 5 + [0.0, 0.0, 1e-20, 0.0, 1e25, 1e-12, 0.0, 1e36],
])
def test_state_norms_exact_through_jumps_and_zeros(factors):
  # h' = c_t * h + d_t * 1: the state jumps, vanishes and reappears.
  cs = np.array(factors, np.float32)
  ds = np.where(cs == 0, np.float32(1e-20), 0).astype(np.float32)
  ds[-1] = 0
  xs = np.stack([cs, ds], 1)
  step = lambda p, h, x: x[0] * h + x[1]
  h0 = np.linspace(0.5, 1.5, 16).astype(np.float32)
  g = ex.jvp_growth(step, None, h0, xs, key=0)
  want = _float32_states(step, h0, xs)
  np.testing.assert_allclose(np.asarray(g.log_state_norm), want, rtol=2e-6,
                             atol=2e-6)
  # The tangent is scaled by c_t: growth is the running sum of log |c_t|.
  with np.errstate(divide="ignore"):
    lg = np.cumsum(np.log(np.abs(cs.astype(np.float64))))
  np.testing.assert_allclose(np.asarray(g.log_growth), lg, rtol=2e-6,
                             atol=2e-5)


def test_vanishing_tanh_state_reads_its_true_tiny_norm():
  # A tanh RNN at g = 0.3 decays as 0.3^t: its float32 state is ~1e-30 at
  # t = 57, far below where a plain float32 sum of squares reads 0.
  p = ex.rnn.init(jax.random.key(0), 16, weight_scale=0.3,
                  init="identity")
  h0 = jnp.ones(16)
  g = ex.jvp_growth(ex.rnn.step, p, h0, length=70, key=0)
  h, want = 1.0, []
  for _ in range(70):                         # each unit: h' = tanh(0.3 h)
    h = np.tanh(0.3 * h)
    want.append(np.log(4.0 * h))
  want = np.array(want)
  ok = want > np.log(1.2e-38 * 4)            # still a normal float32
  np.testing.assert_allclose(np.asarray(g.log_state_norm)[ok], want[ok],
                             atol=1e-4)
  assert np.all(np.asarray(g.log_state_norm)[ok] > -89)


def test_gram_schmidt_qr_matches_householder_and_stays_orthonormal(x64):
  from exploding import _core
  A = jax.random.normal(jax.random.key(0), (3, 40, 8), jnp.float64)
  A = A.at[1, :, 5].set(A[1, :, 2] * 3.0)       # a column in the span
  A = A.at[2, :, 0].set(0.0)                     # and a zero column
  Q, d = _core._gram_schmidt(A)
  _, R = jnp.linalg.qr(A)
  want = np.abs(np.diagonal(np.asarray(R), axis1=-2, axis2=-1))
  # Full rank: |diag R| is unique. Deficient: equal up to the dependent
  # column, zero there (after it, both complete the basis their own way).
  np.testing.assert_allclose(np.asarray(d[0]), want[0], atol=1e-12)
  np.testing.assert_allclose(np.asarray(d[1, :6]), want[1, :6], atol=1e-12)
  assert d[1, 5] < 1e-12 and d[2, 0] == 0
  eye = np.broadcast_to(np.eye(8), (3, 8, 8))
  np.testing.assert_allclose(np.swapaxes(Q, -1, -2) @ Q, eye, atol=1e-12)
  # Where R's column is full rank, Q spans the same columns.
  np.testing.assert_allclose(np.abs(np.einsum("dp,dp->p", Q[0],
                             A[0] / np.linalg.norm(A[0], axis=0)))[0], 1,
                             atol=1e-12)
