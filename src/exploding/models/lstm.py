"""Long short-term memory, a pure transition on the state ``(h, c)``.

With gates in the order input, forget, cell, output:

  i = sigmoid(a_i), f = sigmoid(a_f + forget_bias), g = tanh(a_g),
  o = sigmoid(a_o), with a = weight_scale * (W0 @ h) + U @ x
  + bias_scale * b0;
  c' = f * c + i * g,  h' = o * tanh(c').

The additive cell path is the remedy: ``dc'/dc = diag(f)``, so with small
recurrent weights the memory decays as ``sigmoid(forget_bias)^T`` instead of
through a product of full Jacobians (Hochreiter & Schmidhuber 1997; the
forget gate of Gers et al. 2000; the bias of 1 of Jozefowicz et al. 2015).
The equations match ``flax.linen.LSTMCell`` (whose carry is ``(c, h)``).

References:
  Hochreiter, Schmidhuber. Long short-term memory. Neural Computation 1997.
  Jozefowicz, Zaremba, Sutskever. An empirical exploration of recurrent
  network architectures. ICML 2015.
"""

from __future__ import annotations

from typing import Any

import functools

import flax.struct
import jax
import jax.numpy as jnp

from exploding import _validation, initializers
from exploding.models import rnn
from exploding.models.model import Model

__all__ = ["LSTMParams", "init", "step", "apply", "model"]


@flax.struct.dataclass
class LSTMParams:
  """Parameters of an LSTM; every array is a pytree leaf.

  Attributes:
    W0: ``(4 * hidden, hidden)`` recurrent weights at unit scale, gate blocks
      in the order input, forget, cell, output.
    U: ``(4 * hidden, input_size)`` input weights.
    b0: ``(4 * hidden,)`` unit bias draws, ``N(0, 1)``.
    weight_scale: ``()`` gain applied after ``W0 @ h``.
    bias_scale: ``()`` sigma_b, multiplying ``b0``.
    forget_bias: ``()`` added to the forget gate's preactivation.
  """

  W0: jax.Array
  U: jax.Array
  b0: jax.Array
  weight_scale: jax.Array
  bias_scale: jax.Array
  forget_bias: jax.Array

  @property
  def hidden(self) -> int:
    return self.W0.shape[-1]


def init(key: jax.Array, hidden: int, *, weight_scale: Any = 1.0,
         forget_bias: Any = 1.0, input_size: int = 0, init: str = "gaussian",
         bias_scale: Any = 0.0, dtype: Any = None) -> LSTMParams:
  """Draws LSTM parameters.

  Args:
    key: PRNG key.
    hidden: state size, >= 1.
    weight_scale: gain on the recurrent weights, > 0 (``W0`` entries
      ``N(0, 1/hidden)``).
    forget_bias: added to the forget gate's preactivation (any real).
    input_size: input dimension, >= 0.
    init: initialiser of each gate's recurrent block.
    bias_scale: sigma_b >= 0 of random gate biases (0: zero biases).
    dtype: float dtype; ``None`` is the default float.

  Returns:
    ``LSTMParams``.
  """
  hidden = _validation.check_int("hidden", hidden, 1)
  input_size = _validation.check_int("input_size", input_size, 0)
  _validation.check_positive("weight_scale", weight_scale)
  _validation.check_nonnegative("bias_scale", bias_scale)
  _validation.check_finite("forget_bias", forget_bias)
  make_w = initializers.initializer(init)
  dtype = _validation.float_dtype(dtype)
  kw, ku, kb = jax.random.split(key, 3)
  W0 = jnp.concatenate([make_w(k, (hidden, hidden), dtype=dtype)
                        for k in jax.random.split(kw, 4)])
  U = jax.random.normal(ku, (4 * hidden, input_size), jnp.float32)
  U = (U / jnp.sqrt(max(input_size, 1))).astype(dtype)
  b0 = jax.random.normal(kb, (4 * hidden,), jnp.float32).astype(dtype)
  return LSTMParams(W0, U, b0, jnp.asarray(weight_scale, dtype),
                    jnp.asarray(bias_scale, dtype),
                    jnp.asarray(forget_bias, dtype))


def step(p: LSTMParams, state: tuple[jax.Array, jax.Array],
         x: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """One LSTM transition.

  Args:
    p: parameters.
    state: ``(h, c)``, each ``(..., hidden)``.
    x: ``(..., input_size)`` input or ``None``.

  Returns:
    The next ``(h, c)``, same shapes and dtype.
  """
  h, c = state
  if h.shape[-1] != p.hidden or c.shape != h.shape:
    raise ValueError(f"state must be (h, c) with last axis {p.hidden} "
                     f"(hidden), got shapes {h.shape}, {c.shape}")
  a = rnn.preactivation(p, h, x)
  ai, af, ag, ao = jnp.split(a, 4, axis=-1)
  c = (jax.nn.sigmoid(af + p.forget_bias) * c
       + jax.nn.sigmoid(ai) * jnp.tanh(ag))
  h = jax.nn.sigmoid(ao) * jnp.tanh(c)
  return h.astype(state[0].dtype), c.astype(state[1].dtype)


def apply(p: LSTMParams, state0: tuple[jax.Array, jax.Array],
          xs: jax.Array | None = None, *, length: int | None = None
          ) -> tuple[jax.Array, jax.Array]:
  """Runs the LSTM with ``lax.scan``; returns ``(hs, cs)``, each
  ``(T, hidden)``. ``xs``: ``(T, input_size)`` or ``None`` with ``length``."""
  _validation.check_finite("params", p)
  _validation.check_finite("state0", state0)
  _validation.check_finite("xs", xs)
  if xs is None:
    length = _validation.check_int("length", length, 1)

  def body(s, x):
    s = step(p, s, x)
    return s, s

  return jax.lax.scan(body, state0, xs, length=length)[1]


@functools.lru_cache(maxsize=None)
def model(hidden: int, *, input_size: int = 0, init: str = "gaussian",
          weight_scale: float = 1.0, bias_scale: float = 0.0,
          forget_bias: float = 1.0, dtype: Any = None) -> Model:
  """The LSTM as a ``Model``: knobs ``weight_scale``, ``bias_scale``,
  ``forget_bias``; state ``(h, c)``, each ``N(0, 1)`` per entry; no input
  of its own (``input_shape`` is ``(input_size,)`` for a sweep's
  ``inputs=``). Never homogeneous (the gates saturate)."""
  hidden = _validation.check_int("hidden", hidden, 1)
  input_size = _validation.check_int("input_size", input_size, 0)
  initializers.initializer(init)
  dtype = _validation.float_dtype(dtype)
  settings = dict(hidden=hidden, input_size=input_size, init=init,
                  weight_scale=float(weight_scale),
                  bias_scale=float(bias_scale),
                  forget_bias=float(forget_bias), dtype=str(dtype))
  return Model(
      init=functools.partial(_init, hidden=hidden, weight_scale=weight_scale,
                             bias_scale=bias_scale, forget_bias=forget_bias,
                             input_size=input_size, init=init, dtype=dtype),
      step=step, state0=functools.partial(_state0, hidden=hidden, dtype=dtype),
      input_shape=(input_size,) if input_size else None, name="lstm",
      settings=settings)


_init = init   # ``model``'s argument ``init`` shadows the function


def _state0(key, hidden, dtype):
  h, c = jax.random.normal(key, (2, hidden), jnp.float32).astype(dtype)
  return h, c
