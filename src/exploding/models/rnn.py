"""Vanilla recurrent network, a pure transition.

``h_t = phi(g * (W0 @ h_{t-1}) + U @ x_t + sigma_b * b0)``. ``W0`` and
``b0`` are drawn once per key at unit scale; the weight scale ``g`` and the
bias scale ``sigma_b`` are scalar leaves applied *after* the matmul, so a
``vmap`` over them shares the draws and batches the matvecs into one GEMM.
With Gaussian ``W0`` (entries ``N(0, 1/hidden)``) ``g`` is sigma_w of the
mean-field theory; ``b0 ~ N(0, 1)``, so the bias is ``N(0, sigma_b^2)``.

The Jacobian of one step is ``diag(phi'(a_t)) g W0``: gradients vanish when
its norm stays below one and explode when above (Pascanu et al. 2013).

References:
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from exploding import _validation, initializers
from exploding.activations import ACTIVATIONS, activation as _activation
from exploding.models.model import Model, bias_free, normal_state

__all__ = ["RNNParams", "init", "step", "apply", "model", "preactivation"]


@flax.struct.dataclass
class RNNParams:
  """Parameters of a vanilla RNN; every array is a pytree leaf.

  Attributes:
    W0: ``(hidden, hidden)`` recurrent matrix at unit scale.
    U: ``(hidden, input_size)`` input matrix, entries ``N(0, 1/input_size)``.
    b0: ``(hidden,)`` unit bias draw, ``N(0, 1)``.
    weight_scale: ``()`` the gain ``g`` applied after ``W0 @ h``.
    bias_scale: ``()`` sigma_b, multiplying ``b0``.
    activation: static name of the nonlinearity.
  """

  W0: jax.Array
  U: jax.Array
  b0: jax.Array
  weight_scale: jax.Array
  bias_scale: jax.Array
  activation: str = flax.struct.field(pytree_node=False, default="tanh")

  @property
  def hidden(self) -> int:
    return self.W0.shape[-1]

  @property
  def b(self) -> jax.Array:
    """The bias ``bias_scale * b0``."""
    return self.bias_scale * self.b0


def init(key: jax.Array, hidden: int, *, weight_scale: Any = 1.0,
         bias_scale: Any = 0.0, activation: str = "tanh",
         init: str = "gaussian", input_size: int = 0,
         dtype: Any = None) -> RNNParams:
  """Draws RNN parameters.

  Args:
    key: PRNG key.
    hidden: state size, >= 1.
    weight_scale: ``g`` (sigma_w), > 0; a leaf, so it can be vmapped.
    bias_scale: sigma_b >= 0; biases ``N(0, bias_scale^2)``.
    activation: ``tanh``, ``relu``, ``sigmoid``, ``linear``, ``hard_tanh``,
      ``erf``.
    init: ``gaussian``, ``orthogonal`` or ``identity`` for ``W0``.
    input_size: input dimension, >= 0 (0: no input).
    dtype: float dtype; ``None`` is the default float.

  Returns:
    ``RNNParams``.

  Example:
    >>> import jax, exploding as ex
    >>> p = ex.rnn.init(jax.random.key(0), 16, weight_scale=1.5)
    >>> ex.rnn.apply(p, jax.numpy.ones(16), length=10).shape
    (10, 16)
  """
  hidden = _validation.check_int("hidden", hidden, 1)
  input_size = _validation.check_int("input_size", input_size, 0)
  _validation.check_positive("weight_scale", weight_scale)
  _validation.check_nonnegative("bias_scale", bias_scale)
  _validation.check_choice("activation", activation, ACTIVATIONS)
  make_w = initializers.initializer(init)
  dtype = _validation.float_dtype(dtype)
  kw, ku, kb = jax.random.split(key, 3)
  W0 = make_w(kw, (hidden, hidden), dtype=dtype)
  U = jax.random.normal(ku, (hidden, input_size), jnp.float32)
  U = (U / jnp.sqrt(max(input_size, 1))).astype(dtype)
  b0 = jax.random.normal(kb, (hidden,), jnp.float32).astype(dtype)
  return RNNParams(W0, U, b0, jnp.asarray(weight_scale, dtype),
                   jnp.asarray(bias_scale, dtype), activation)


def step(p: RNNParams, h: jax.Array, x: jax.Array | None = None) -> jax.Array:
  """One transition ``phi(g * (W0 @ h) + U @ x + sigma_b * b0)``.

  Args:
    p: parameters.
    h: ``(..., hidden)`` state (a leading batch axis is allowed).
    x: ``(..., input_size)`` input, or ``None`` for no input.

  Returns:
    The next state, same shape and dtype as ``h``.
  """
  if h.shape[-1] != p.hidden:
    raise ValueError(f"h must have last axis {p.hidden} (hidden), got shape "
                     f"{h.shape}")
  return _activation(p.activation).fn(preactivation(p, h, x)).astype(h.dtype)


def preactivation(p, h: jax.Array, x: jax.Array | None) -> jax.Array:
  """``g * (W0 @ h) + U @ x + sigma_b * b0`` for any params with those
  leaves (the RNN's, or the LSTM's stacked gates); checks ``x``'s input
  size."""
  a = p.weight_scale * (h @ p.W0.T) + p.bias_scale * p.b0
  if x is not None:
    if x.shape[-1] != p.U.shape[1]:
      raise ValueError(f"x must have last axis {p.U.shape[1]} (input_size), "
                       f"got shape {x.shape}")
    a = a + x @ p.U.T
  return a


def apply(p: RNNParams, h0: jax.Array, xs: jax.Array | None = None, *,
          length: int | None = None) -> jax.Array:
  """Runs the RNN with ``lax.scan``.

  Args:
    p: parameters.
    h0: ``(hidden,)`` initial state.
    xs: ``(T, input_size)`` inputs, or ``None`` with ``length=T``.
    length: number of steps when ``xs`` is ``None``.

  Returns:
    ``(T, hidden)`` states ``h_1 .. h_T``.
  """
  _validation.check_finite("params", p)
  _validation.check_finite("h0", h0)
  _validation.check_finite("xs", xs)
  if xs is None:
    length = _validation.check_int("length", length, 1)
  elif length is not None and length != xs.shape[0]:
    raise ValueError(f"length={length} disagrees with xs.shape[0]="
                     f"{xs.shape[0]}")

  def body(h, x):
    h = step(p, h, x)
    return h, h

  return jax.lax.scan(body, h0, xs, length=length)[1]


@functools.lru_cache(maxsize=None)
def model(hidden: int, *, activation: str = "tanh", init: str = "gaussian",
          input_size: int = 0, weight_scale: float = 1.0,
          bias_scale: float = 0.0, dtype: Any = None) -> Model:
  """The RNN as a ``Model``: params from ``init`` (knobs ``weight_scale``,
  ``bias_scale``), state ``N(0, 1)`` per entry, no input of its own
  (``input_shape`` is ``(input_size,)`` for a sweep's ``inputs=``).

  ReLU and linear RNNs are homogeneous where ``bias_scale == 0``, decided
  per grid point. Forward mode runs the fused ``advance``: the states and
  tangents of every point of a seed are the rows of one GEMM
  ``[H; V] @ W0^T`` (they share ``W0``; the scale multiplies after it).

  Example:
    >>> import numpy as np, exploding as ex
    >>> m = ex.sweep(ex.rnn.model(16), grid={"weight_scale": [0.5, 2.0]},
    ...              length=32, seeds=2, progress=False)
    >>> m.log_growth.shape
    (2, 32, 2)
  """
  hidden = _validation.check_int("hidden", hidden, 1)
  input_size = _validation.check_int("input_size", input_size, 0)
  _validation.check_choice("activation", activation, ACTIVATIONS)
  initializers.initializer(init)
  dtype = _validation.float_dtype(dtype)
  settings = dict(hidden=hidden, activation=activation, init=init,
                  input_size=input_size, weight_scale=float(weight_scale),
                  bias_scale=float(bias_scale), dtype=str(dtype))
  return Model(
      init=functools.partial(_init, hidden=hidden,
                             weight_scale=weight_scale, bias_scale=bias_scale,
                             activation=activation, init=init,
                             input_size=input_size, dtype=dtype),
      step=step,
      state0=functools.partial(normal_state, shape=(hidden,), dtype=dtype),
      homogeneous=(bias_free if activation in ("relu", "linear")
                   else False),
      input_shape=(input_size,) if input_size else None,
      advance=_advance, name="rnn", settings=settings)


_init = init   # ``model``'s argument ``init`` shadows the function


def _advance(p: RNNParams, knobs, H, V, x):
  """Forward mode for ``n`` points of one seed in one GEMM per step.

  ``H`` ``(n, hidden)`` states, ``V`` ``(n, probes, hidden)`` tangents,
  ``knobs`` name -> ``(n,)``. ``J v = phi'(a) * (g * (W0 @ v))``; states
  and tangents are the rows of ``[H; V] @ W0^T``. Same arithmetic as
  ``step`` under ``jax.jvp``.
  """
  n, probes, d = V.shape
  g = jnp.broadcast_to(knobs.get("weight_scale", p.weight_scale), (n,))
  sb = jnp.broadcast_to(knobs.get("bias_scale", p.bias_scale), (n,))
  g = g.astype(H.dtype)[:, None]
  V = V.astype(H.dtype).reshape(n * probes, d)
  A = jnp.concatenate([H, V]) @ p.W0.T
  a = g * A[:n] + sb.astype(H.dtype)[:, None] * p.b0
  if x is not None:
    a = a + x @ p.U.T
  h, slope = jax.jvp(_activation(p.activation).fn, (a,), (jnp.ones_like(a),))
  JV = slope[:, None, :] * (g[:, None] * A[n:].reshape(n, probes, d))
  return h.astype(H.dtype), JV.astype(H.dtype)
