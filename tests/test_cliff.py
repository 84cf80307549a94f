"""Tests for exploding.cliff: the wall's location and clipping near it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exploding import cliff


def test_loss_by_hand():
  # w = 0: x_T = b, so the loss is (sigmoid(b) - 0.7)^2.
  for b in [-1.0, 0.0, 2.0]:
    want = (1 / (1 + np.exp(-b)) - 0.7)**2
    np.testing.assert_allclose(cliff.cliff_loss(0.0, b), want, rtol=1e-6)
  # One step by hand.
  x1 = 3.0 / (1 + np.exp(-0.5)) - 2.0
  np.testing.assert_allclose(cliff.cliff_loss(3.0, -2.0, length=1),
                             (1 / (1 + np.exp(-x1)) - 0.7)**2, rtol=1e-6)


def test_boundary_is_fixed_point(x64):
  w = jnp.array([5.0, 8.0])
  b = cliff.cliff_boundary(w)
  np.testing.assert_allclose(w * jax.nn.sigmoid(0.5) + b, 0.5, rtol=1e-14)
  np.testing.assert_allclose(cliff.critical_weight(), 4.2552519, rtol=1e-6)


def test_surface_matches_pointwise(x64):
  ws, bs = jnp.array([5.0, 7.0]), jnp.array([-3.0, -1.0, 0.5])
  loss, gnorm = cliff.cliff_surface(ws, bs)
  assert loss.shape == gnorm.shape == (2, 3)
  assert loss.dtype == jnp.float64
  value_and_grad = jax.jit(jax.value_and_grad(cliff.cliff_loss, (0, 1)))
  for i, w in enumerate(ws):
    for j, b in enumerate(bs):
      value, grad = value_and_grad(w, b)
      np.testing.assert_allclose(loss[i, j], value, rtol=1e-12)
      np.testing.assert_allclose(gnorm[i, j], np.hypot(*grad), rtol=1e-10)


def test_jump_at_theoretical_boundary(x64):
  ws = jnp.array([5.0, 6.0, 8.0, 10.0])
  bs = jnp.linspace(-8.0, 0.0, 801)
  step = float(bs[1] - bs[0])
  loss, _ = cliff.cliff_surface(ws, bs)
  jumps = np.abs(np.diff(np.asarray(loss), axis=1))
  where = jumps.argmax(axis=1)
  found = 0.5 * (bs[where] + bs[where + 1])
  theory = cliff.cliff_boundary(ws)
  np.testing.assert_array_less(np.abs(found - theory), step)
  # A wall, not a slope: most of the loss range is crossed in one grid step.
  assert np.all(jumps.max(axis=1) > 0.3)


def test_clipped_step_bounded_unclipped_explodes(x64):
  w = 6.0
  b0 = float(cliff.cliff_boundary(w)) + 1e-9
  lr, threshold = 0.1, 1.0
  clipped = cliff.cliff_descent(w, b0, learning_rate=lr, steps=20,
                                clip_norm=threshold)
  free = cliff.cliff_descent(w, b0, learning_rate=lr, steps=20)
  assert clipped.params.shape == (21, 2) and clipped.step.shape == (20, 2)
  np.testing.assert_allclose(clipped.params[1:] - clipped.params[:-1],
                             clipped.step, atol=1e-12)
  clipped_norms = np.linalg.norm(clipped.step, axis=1)
  assert np.all(clipped_norms <= lr * threshold * (1 + 1e-12))
  free_first = np.linalg.norm(free.step[0])
  assert free.grad_norm[0] > 1e6   # near the wall the gradient explodes
  assert free_first > 1e4 * clipped_norms[0]
  np.testing.assert_allclose(free_first, lr * free.grad_norm[0], rtol=1e-12)
  # Thrown onto a plateau, the unclipped run stops learning.
  assert float(free.grad_norm[-1]) < 1e-6


def test_bad_arguments():
  with pytest.raises(ValueError, match="ws"):
    cliff.cliff_surface(jnp.ones((2, 2)), jnp.ones(3))
  with pytest.raises(ValueError, match="bs"):
    cliff.cliff_surface(jnp.ones(2), jnp.array([0.0, jnp.nan]))
  with pytest.raises(ValueError, match="length"):
    cliff.cliff_loss(1.0, 1.0, length=0)
  with pytest.raises(ValueError, match="learning_rate"):
    cliff.cliff_descent(1.0, 1.0, learning_rate=0.0, steps=3)
  with pytest.raises(ValueError, match="clip_norm"):
    cliff.cliff_descent(1.0, 1.0, learning_rate=0.1, steps=3, clip_norm=-1.0)
  with pytest.raises(ValueError, match="steps"):
    cliff.cliff_descent(1.0, 1.0, learning_rate=0.1, steps=0)


def test_critical_weight_matches_slope_and_large_x0():
  # w_c sigmoid'(x0) = 1, including where float sigmoid(x0) rounds to 1.
  for x0 in [-3.0, 0.0, 0.5, 20.0, 100.0]:
    s = 1.0 / (1.0 + np.exp(-x0))
    slope = s * (1.0 - s) if abs(x0) < 10 else np.exp(-abs(x0))
    np.testing.assert_allclose(cliff.critical_weight(x0) * slope, 1.0,
                               rtol=1e-6)
  assert cliff.critical_weight(0.0) == 4.0
  assert np.isfinite(cliff.critical_weight(709.0))


# Issue 13: critical_weight(1000) raised ZeroDivisionError.
@pytest.mark.parametrize("x0, error", [
    (1000.0, ValueError), (-710.0, ValueError), (float("nan"), ValueError),
    (float("inf"), ValueError), ("0.5", TypeError), (None, TypeError),
    (True, TypeError), ([0.5], TypeError), (1j, TypeError)])
def test_critical_weight_bad_x0(x0, error):
  with pytest.raises(error, match="x0"):
    cliff.critical_weight(x0)
  if error is ValueError:
    with pytest.raises(ValueError, match=r"\|x0\| <= 709\.78"):
      cliff.critical_weight(x0)
