"""Edge cases of the engine and maps reported against 0.1 (issue 13)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

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
