"""Vanilla recurrent network, a pure transition.

``h_t = phi(g * (W0 @ h_{t-1}) + U @ x_t + b)``. ``W0`` is drawn once per key
with unit scale and the weight scale ``g`` multiplies *after* the matmul, so
a ``vmap`` over ``g`` shares ``W0`` and batches the matvecs into one GEMM.
With Gaussian ``W0`` (entries ``N(0, 1/hidden)``) ``g`` is sigma_w of the
mean-field theory; ``b ~ N(0, bias_scale^2)``.

The Jacobian of one step is ``diag(phi'(a_t)) g W0``: gradients vanish when
its norm stays below one and explode when above (Pascanu et al. 2013).

References:
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from exploding import _validation, initializers
from exploding.activations import ACTIVATIONS, activation as _activation

__all__ = ["RNNParams", "init", "step", "apply", "step_and_tangent"]


@flax.struct.dataclass
class RNNParams:
  """Parameters of a vanilla RNN; every array is a pytree leaf.

  Attributes:
    W0: ``(hidden, hidden)`` recurrent matrix at unit scale.
    U: ``(hidden, input_size)`` input matrix, entries ``N(0, 1/input_size)``.
    b: ``(hidden,)`` bias.
    weight_scale: ``()`` the gain ``g`` applied after ``W0 @ h``.
    activation: static name of the nonlinearity.
  """

  W0: jax.Array
  U: jax.Array
  b: jax.Array
  weight_scale: jax.Array
  activation: str = flax.struct.field(pytree_node=False, default="tanh")

  @property
  def hidden(self) -> int:
    return self.W0.shape[-1]


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
  b = (bias_scale * jax.random.normal(kb, (hidden,), jnp.float32)).astype(dtype)
  return RNNParams(W0, U, b, jnp.asarray(weight_scale, dtype), activation)


def step(p: RNNParams, h: jax.Array, x: jax.Array | None = None) -> jax.Array:
  """One transition ``phi(g * (W0 @ h) + U @ x + b)``.

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
  """``g * (W0 @ h) + U @ x + b`` for any params with those leaves (the
  RNN's, or the LSTM's stacked gates); checks ``x``'s input size."""
  a = p.weight_scale * (h @ p.W0.T) + p.b
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


def step_and_tangent(p: RNNParams, h: jax.Array, x: jax.Array | None,
                     V: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step and its Jacobian applied to tangents, through one matmul.

  ``J = diag(phi'(a)) g W0``, so ``[h, V]`` share a single ``W0`` product:
  under ``vmap`` over scales and seeds this is one GEMM of twice the
  width instead of two. (``ex.sweep`` shares ``W0`` the same way, with the
  states and tangents of all scales as the rows of one GEMM.)

  Args:
    p: parameters.
    h: ``(hidden,)`` state.
    x: ``(input_size,)`` input or ``None``.
    V: ``(hidden, k)`` tangents.

  Returns:
    ``(step(p, h, x), J @ V)`` with the shapes and dtype of ``h``, ``V``.
  """
  HV = jnp.concatenate([h[:, None], V], axis=1)
  A = p.weight_scale * (p.W0 @ HV)
  a = A[:, 0] + p.b
  if x is not None:
    a = a + p.U @ x
  phi = _activation(p.activation).fn
  h_new, slope = jax.jvp(phi, (a,), (jnp.ones_like(a),))
  return h_new.astype(h.dtype), (slope[:, None] * A[:, 1:]).astype(V.dtype)
