"""The cliff: a one-unit RNN whose loss surface jumps (Pascanu et al. 2013).

The recurrence ``x_t = w * sigmoid(x_(t-1)) + b``, ``x_0 = 0.5``, run for
``T = 50`` steps with loss ``(sigmoid(x_T) - 0.7)**2`` (Pascanu et al. 2013,
Section 2.3, Fig. 6) has a loss surface over ``(w, b)`` that is flat almost
everywhere and drops by a wall where the gradient explodes.

Where the wall is. For ``w > 0`` the map ``f(x) = w sigmoid(x) + b`` is
increasing, so the orbit of ``x_0`` is monotone: it climbs to the next fixed
point above ``x_0`` if ``f(x_0) > x_0`` and falls to the next one below if
``f(x_0) < x_0``. The orbit switches basin where ``x_0`` is itself a fixed
point, ``x_0 = w sigmoid(x_0) + b``, that is

  ``b_cliff(w) = x_0 - w sigmoid(x_0)``.

That fixed point is unstable, and the two basins far apart, when its slope
``w sigmoid'(x_0) > 1``, i.e. ``w > w_c = 1 / (sigmoid(x_0)(1 -
sigmoid(x_0)))`` (4.255 for ``x_0 = 0.5``; the map has three fixed points
for some ``b`` once ``w > 4``). Along ``b`` at fixed ``w > w_c`` the loss
jumps at ``b_cliff(w)`` with a width of order ``(w sigmoid'(x_0))**-T``, and
``dL/db`` there grows like ``(w sigmoid'(x_0))**T``: an exploding gradient.
A gradient step taken near the wall is thrown far away unless its norm is
clipped (Pascanu et al. 2013, Section 3.2, Fig. 7).

Precision: the wall is steep on a scale float32 cannot resolve for large
``w``; enable float64 (``with jax.enable_x64(True):``) for surfaces and
descents. Inputs are cast to the default float of the current mode.

References:
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
  neural networks", ICML 2013, Section 2.3 (Fig. 6) and Section 3.2.
  Doya, "Bifurcations in the learning of recurrent neural networks", 1992.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from exploding import _validation
from exploding import clipping

__all__ = ["CliffDescent", "cliff_boundary", "cliff_descent", "cliff_loss",
           "cliff_surface", "critical_weight"]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


# |x0| above which 2 + 2 cosh(x0) exceeds the largest float64.
_MAX_X0 = math.log(sys.float_info.max)


class CliffDescent(NamedTuple):
  """A gradient-descent trajectory on the cliff loss.

  Attributes:
    params: ``(steps + 1, 2)`` float, ``(w, b)`` before each step and after
      the last.
    loss: ``(steps + 1,)`` float, the loss at each row of ``params``.
    grad_norm: ``(steps + 1,)`` float, the raw (unclipped) gradient norm at
      each row of ``params``.
    step: ``(steps, 2)`` float, the update actually applied,
      ``params[t + 1] = params[t] + step[t]`` (after clipping).
  """

  params: jax.Array
  loss: jax.Array
  grad_norm: jax.Array
  step: jax.Array


def cliff_loss(w: Any, b: Any, *, length: int = 50, x0: float = 0.5,
               target: float = 0.7) -> jax.Array:
  """Loss ``(sigmoid(x_T) - target)**2`` of ``x_t = w sigmoid(x_(t-1)) + b``.

  Differentiable in ``w`` and ``b`` (and jit/vmap-able; ``length`` static).

  Args:
    w: scalar float, recurrent weight.
    b: scalar float, bias.
    length: int >= 1, the number of steps T.
    x0: float, initial state.
    target: float, target of ``sigmoid(x_T)``.

  Returns:
    Scalar loss in the default float dtype.

  References:
    Pascanu et al. 2013, Section 2.3.

  Example:
    >>> round(float(cliff_loss(0.0, 0.0)), 6)  # (sigmoid(0) - 0.7)**2
    0.04
  """
  length = _validation.check_int("length", length, minimum=1)
  dtype = _validation.float_dtype(None)
  w, b = jnp.asarray(w, dtype), jnp.asarray(b, dtype)

  def step(x, _):
    return w * jax.nn.sigmoid(x) + b, None

  x_t, _ = jax.lax.scan(step, jnp.asarray(x0, dtype), None, length=length)
  return (jax.nn.sigmoid(x_t) - target)**2


def cliff_surface(ws: Any, bs: Any, *, length: int = 50, x0: float = 0.5,
                  target: float = 0.7) -> tuple[jax.Array, jax.Array]:
  """Loss and gradient norm on the grid ``ws x bs``, in one jitted call.

  Args:
    ws: ``(nw,)`` float, recurrent weights.
    bs: ``(nb,)`` float, biases.
    length: int >= 1, the number of steps T.
    x0: float, initial state.
    target: float, target of ``sigmoid(x_T)``.

  Returns:
    ``(loss, grad_norm)``, each ``(nw, nb)`` in the default float dtype
    (float64 under x64, which callers should enable near the wall);
    ``grad_norm`` is ``||(dL/dw, dL/db)||``.

  References:
    Pascanu et al. 2013, Fig. 6.

  Example:
    >>> loss, gnorm = cliff_surface(jnp.linspace(5, 10, 3),
    ...                             jnp.linspace(-6, 0, 4))
    >>> loss.shape
    (3, 4)
  """
  ws, bs = _grid_axis("ws", ws), _grid_axis("bs", bs)
  length = _validation.check_int("length", length, minimum=1)
  return _surface(ws, bs, float(x0), float(target), length)


def cliff_descent(
    w0: float,
    b0: float,
    *,
    learning_rate: float,
    steps: int,
    clip_norm: float | None = None,
    length: int = 50,
    x0: float = 0.5,
    target: float = 0.7,
) -> CliffDescent:
  """Gradient descent on the cliff loss, optionally clipping by norm.

  The optimiser is ``optax.sgd(learning_rate)``, after
  ``clipping.clipper("norm", clip_norm)`` (``optax.clip_by_global_norm``)
  when ``clip_norm`` is given, so every step has
  ``||step|| <= learning_rate * clip_norm``. One ``lax.scan``, jitted.

  Args:
    w0: float, initial weight.
    b0: float, initial bias.
    learning_rate: float > 0.
    steps: int >= 1, number of updates.
    clip_norm: float > 0 or ``None`` (no clipping).
    length: int >= 1, the number of RNN steps T.
    x0: float, initial state.
    target: float, target of ``sigmoid(x_T)``.

  Returns:
    ``CliffDescent(params, loss, grad_norm, step)``; see its fields.

  References:
    Pascanu et al. 2013, Section 3.2 and Fig. 7.

  Example:
    >>> d = cliff_descent(8.0, -4.5, learning_rate=0.1, steps=10,
    ...                   clip_norm=1.0)
    >>> d.params.shape, d.step.shape
    ((11, 2), (10, 2))
  """
  _validation.check_positive("learning_rate", learning_rate)
  steps = _validation.check_int("steps", steps, minimum=1)
  length = _validation.check_int("length", length, minimum=1)
  _validation.check_finite("w0", w0)
  _validation.check_finite("b0", b0)
  if clip_norm is not None:
    _validation.check_positive("clip_norm", clip_norm)
  dtype = _validation.float_dtype(None)
  start = jnp.asarray([w0, b0], dtype)
  clip = None if clip_norm is None else jnp.asarray(clip_norm, dtype)
  return _descent(start, jnp.asarray(learning_rate, dtype), clip,
                  float(x0), float(target), length, steps)


def cliff_boundary(w: Any, x0: float = 0.5) -> jax.Array:
  """Bias at which the loss wall sits: ``b = x0 - w sigmoid(x0)``.

  There ``x0`` is a fixed point of ``x -> w sigmoid(x) + b``, and the orbit
  from ``x0`` switches basin (see the module docstring). A wall (not a
  smooth step) only for ``w > critical_weight(x0)``.

  Args:
    w: float or float array of any shape, recurrent weights.
    x0: float, initial state.

  Returns:
    Array shaped like ``w``, the bias on the wall.

  Example:
    >>> b = cliff_boundary(8.0)  # 0.5 - 8 * sigmoid(0.5) = -4.480
  """
  dtype = _validation.float_dtype(None)
  return jnp.asarray(x0, dtype) - jnp.asarray(w, dtype) * jax.nn.sigmoid(
      jnp.asarray(x0, dtype))


def critical_weight(x0: float = 0.5) -> float:
  """Smallest ``w`` with a wall: ``1 / sigmoid'(x0) = 2 + 2 cosh(x0)``.

  Above it the fixed point ``x0`` on ``cliff_boundary`` is unstable
  (slope ``w sigmoid'(x0) > 1``), so nearby orbits separate. With
  ``sigmoid'(x) = sigmoid(x) sigmoid(-x) = 1 / (2 + 2 cosh(x))`` the value
  is accurate in float64 for every ``x0`` (4.255 at 0.5); the form
  ``1 / (s (1 - s))`` divides by zero once ``s = sigmoid(x0)`` rounds to 1.

  Args:
    x0: float, initial state, ``|x0| <= 709.78`` (``log`` of the largest
      float64; beyond it the critical weight, ``~exp(|x0|)``, overflows).

  Returns:
    float, at least 4 (at ``x0 = 0``).

  Raises:
    TypeError: ``x0`` is not a real number.
    ValueError: ``x0`` is not finite or ``|x0| > 709.78``.

  Example:
    >>> round(critical_weight(0.5), 4)
    4.2553
  """
  if isinstance(x0, (bool, str)) or not _is_real_scalar(x0):
    raise TypeError(f"x0 must be a real number, got {x0!r}")
  x0 = float(x0)
  if not abs(x0) <= _MAX_X0:
    raise ValueError(f"x0 must be finite with |x0| <= {_MAX_X0:.2f} (the "
                     f"critical weight 2 + 2 cosh(x0) overflows float64 "
                     f"beyond), got {x0!r}")
  return 2.0 + 2.0 * math.cosh(x0)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _surface(ws, bs, x0, target, length):
  def point(w, b):
    loss, grads = jax.value_and_grad(
        lambda w, b: cliff_loss(w, b, length=length, x0=x0, target=target),
        argnums=(0, 1))(w, b)
    return loss, jnp.hypot(*grads)

  grid = jax.vmap(jax.vmap(point, in_axes=(None, 0)), in_axes=(0, None))
  return grid(ws, bs)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _descent(start, learning_rate, clip_norm, x0, target, length, steps):
  def loss_fn(p):
    return cliff_loss(p[0], p[1], length=length, x0=x0, target=target)

  opt = optax.sgd(learning_rate)
  if clip_norm is not None:
    opt = optax.chain(clipping.clipper("norm", clip_norm), opt)

  def body(carry, _):
    params, state = carry
    loss, grad = jax.value_and_grad(loss_fn)(params)
    update, state = opt.update(grad, state, params)
    return (params + update, state), (params, loss, jnp.linalg.norm(grad),
                                      update)

  (last, _), (params, loss, gnorm, update) = jax.lax.scan(
      body, (start, opt.init(start)), None, length=steps)
  last_loss, last_grad = jax.value_and_grad(loss_fn)(last)
  return CliffDescent(
      params=jnp.concatenate([params, last[None]]),
      loss=jnp.concatenate([loss, last_loss[None]]),
      grad_norm=jnp.concatenate([gnorm, jnp.linalg.norm(last_grad)[None]]),
      step=update)


def _is_real_scalar(value: Any) -> bool:
  try:
    return np.ndim(value) == 0 and np.isrealobj(value) and np.issubdtype(
        np.asarray(value).dtype, np.number)
  except TypeError:
    return False


def _grid_axis(name: str, values: Any) -> jax.Array:
  values = jnp.asarray(values, _validation.float_dtype(None))
  if values.ndim != 1 or values.shape[0] < 1:
    raise ValueError(f"{name} must be a non-empty 1-D array, got shape "
                     f"{values.shape}")
  _validation.check_finite(name, values)
  return values
