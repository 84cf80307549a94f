"""Synthetic long-memory tasks with a time-lag knob.

Each task needs information from ``lag`` or more steps before the end of the
sequence, so its gradient signal must survive a product of at least ``lag``
Jacobians: the harder the lag, the more vanishing gradients hurt (Bengio et
al. 1994; Hochreiter & Schmidhuber 1997; Pascanu et al. 2013, Section 5).
Generators are pure functions of a key; the same key gives the same data.

All return ``Task(inputs, targets, baseline_loss)``:
  ``inputs``: ``(batch, length, input_size)`` float.
  ``targets``: ``(batch, 1)`` float for regression (adding, recall);
    ``(batch, 4)`` float one-hot for the temporal-order classification
    (class index = ``argmax``).
  ``baseline_loss``: the loss of the best constant prediction: for
    regression the MSE of predicting the population mean (the target
    variance), for classification the cross-entropy in nats of predicting
    the class frequencies (``log 4``). A model that learned nothing sits at
    the baseline.

Marker placement (adding, temporal order): the first relevant step ``t1`` is
uniform in ``[0, length - 1 - lag]``, so it lies at least ``lag`` steps before
the last step ``length - 1``; the second ``t2`` is uniform in
``[t1 + 1, length - 1]``. ``lag = length - 1`` pins ``t1 = 0``.

References:
  Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation
  1997, Section 5.4 (adding problem) and 5.6 (temporal order).
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
  neural networks", ICML 2013, Section 5.1.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from exploding import _validation

__all__ = ["N_ORDER_CLASSES", "N_SYMBOLS", "Task", "adding_problem",
           "recall_task", "temporal_order"]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


# Temporal order: symbols 0 ("A") and 1 ("B") are relevant, 2..5 distract.
N_SYMBOLS = 6
N_ORDER_CLASSES = 4


class Task(NamedTuple):
  """One batch of a synthetic task.

  Attributes:
    inputs: ``(batch, length, input_size)`` float array.
    targets: ``(batch, 1)`` float (regression) or ``(batch, 4)`` one-hot
      float (temporal order).
    baseline_loss: float, the loss of the best constant prediction (target
      variance for MSE; ``log 4`` nats cross-entropy for temporal order).
  """

  inputs: jax.Array
  targets: jax.Array
  baseline_loss: float


def adding_problem(
    batch: int,
    length: int,
    *,
    key: jax.Array,
    lag: int | None = None,
    dtype: Any = None,
) -> Task:
  """The adding problem: sum the two marked values.

  Channel 0 holds values ``U(0, 1)``; channel 1 is a marker, exactly two 1s
  per sequence (at ``t1`` and ``t2``, see the module docstring) and 0
  elsewhere. The target is ``u[t1] + u[t2]``, so the first value must be
  carried for at least ``lag`` steps.

  Args:
    batch: int >= 1.
    length: int >= 2, the sequence length T.
    key: PRNG key.
    lag: int in ``[1, length - 1]``, the minimum distance from the first
      marker to the last step; default ``length // 2`` (first marker in the
      first half, as in Hochreiter & Schmidhuber 1997).
    dtype: float dtype; ``None`` is the default float.

  Returns:
    ``Task``: inputs ``(batch, length, 2)``, targets ``(batch, 1)``,
    ``baseline_loss = 1/6`` (variance of a sum of two ``U(0, 1)``).

  References:
    Hochreiter & Schmidhuber 1997, Section 5.4.

  Example:
    >>> task = adding_problem(32, 100, key=jax.random.key(0), lag=80)
    >>> task.inputs.shape, task.targets.shape
    ((32, 100, 2), (32, 1))
  """
  batch, length, lag, dtype = _check(batch, length, lag, dtype, min_length=2)
  inputs, targets = _adding(key, lag, batch, length, dtype)
  return Task(inputs, targets, 1.0 / 6.0)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _adding(key, lag, batch, length, dtype):
  u = _uniform(key, batch, length + 2)
  values = u[:, :length].astype(dtype)
  t1, t2 = _two_positions(u[:, length], u[:, length + 1], length, lag)
  markers = _one_hot_at(t1, length, dtype) + _one_hot_at(t2, length, dtype)
  inputs = jnp.stack([values, markers], axis=-1)
  targets = jnp.sum(values * markers, axis=1, keepdims=True)
  return inputs, targets


def recall_task(
    batch: int,
    length: int,
    *,
    key: jax.Array,
    lag: int,
    dtype: Any = None,
) -> Task:
  """Delayed recall: at the end, output the value seen ``lag`` steps ago.

  One input channel of values ``U(0, 1)``, e.g. a daily price; the target is
  ``u[length - 1 - lag]``, the price ``lag`` days before the last one. No
  marker: the network must count. ``lag = 0`` copies the last input, a
  control with no memory demand.

  Args:
    batch: int >= 1.
    length: int >= 1, the sequence length T.
    key: PRNG key.
    lag: int in ``[0, length - 1]``.
    dtype: float dtype; ``None`` is the default float.

  Returns:
    ``Task``: inputs ``(batch, length, 1)``, targets ``(batch, 1)``,
    ``baseline_loss = 1/12`` (variance of ``U(0, 1)``).

  Example:
    >>> task = recall_task(8, 60, key=jax.random.key(0), lag=50)
    >>> bool((task.targets[:, 0] == task.inputs[:, 9, 0]).all())
    True
  """
  batch, length, lag, dtype = _check(batch, length, lag, dtype, min_length=1,
                                     min_lag=0)
  values = _uniform(key, batch, length)[..., None].astype(dtype)
  targets = values[:, length - 1 - lag, :]
  return Task(values, targets, 1.0 / 12.0)


def temporal_order(
    batch: int,
    length: int,
    *,
    key: jax.Array,
    lag: int | None = None,
    dtype: Any = None,
) -> Task:
  """Temporal order: classify the order of two symbols among distractors.

  Each step is a one-hot over 6 symbols. Steps ``t1`` and ``t2`` (see the
  module docstring) hold a relevant symbol, ``A`` (0) or ``B`` (1); every
  other step holds a distractor drawn uniformly from symbols 2..5. The
  class is ``2 * s1 + s2`` in ``AA=0, AB=1, BA=2, BB=3``.

  Args:
    batch: int >= 1.
    length: int >= 2, the sequence length T.
    key: PRNG key.
    lag: int in ``[1, length - 1]``, the minimum distance from the first
      relevant symbol to the last step; default ``length // 2``.
    dtype: float dtype; ``None`` is the default float.

  Returns:
    ``Task``: inputs ``(batch, length, 6)`` one-hot, targets ``(batch, 4)``
    one-hot (class index is ``argmax(targets, -1)``),
    ``baseline_loss = log 4``.

  References:
    Hochreiter & Schmidhuber 1997, Section 5.6 (task 6a); Pascanu et al.
    2013, Section 5.1.

  Example:
    >>> task = temporal_order(16, 50, key=jax.random.key(0))
    >>> task.inputs.shape, task.targets.shape
    ((16, 50, 6), (16, 4))
  """
  batch, length, lag, dtype = _check(batch, length, lag, dtype, min_length=2)
  inputs, targets = _temporal_order(key, lag, batch, length, dtype)
  return Task(inputs, targets, math.log(N_ORDER_CLASSES))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _temporal_order(key, lag, batch, length, dtype):
  u = _uniform(key, batch, length + 4)
  symbols = 2 + _floor_index(u[:, :length], N_SYMBOLS - 2)
  relevant = _floor_index(u[:, length:length + 2], 2)
  t1, t2 = _two_positions(u[:, length + 2], u[:, length + 3], length, lag)
  steps = jnp.arange(length)
  symbols = jnp.where(steps == t1[:, None], relevant[:, :1], symbols)
  symbols = jnp.where(steps == t2[:, None], relevant[:, 1:], symbols)
  inputs = jax.nn.one_hot(symbols, N_SYMBOLS, dtype=dtype)
  labels = 2 * relevant[:, 0] + relevant[:, 1]
  targets = jax.nn.one_hot(labels, N_ORDER_CLASSES, dtype=dtype)
  return inputs, targets


def _uniform(key: jax.Array, batch: int, width: int) -> jax.Array:
  """All of a task's randomness in one float32 draw (one threefry kernel to
  compile, and the same data in every dtype)."""
  return jax.random.uniform(key, (batch, width), jnp.float32)


def _floor_index(u: jax.Array, n: Any) -> jax.Array:
  """Uniform integers in [0, n) from u in [0, 1); the clamp catches u * n
  rounding up to n in float32."""
  return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def _two_positions(u1: jax.Array, u2: jax.Array, length: int,
                   lag: jax.Array) -> tuple[jax.Array, jax.Array]:
  """t1 uniform in [0, length-1-lag], t2 uniform in [t1+1, length-1]."""
  t1 = _floor_index(u1, length - lag)
  t2 = t1 + 1 + _floor_index(u2, length - 1 - t1)
  return t1, t2


def _one_hot_at(position: jax.Array, length: int, dtype: Any) -> jax.Array:
  return (jnp.arange(length) == position[:, None]).astype(dtype)


def _check(batch, length, lag, dtype, *, min_length, min_lag=1):
  batch = _validation.check_int("batch", batch, minimum=1)
  length = _validation.check_int("length", length, minimum=min_length)
  if lag is None:
    lag = length // 2
  lag = _validation.check_int("lag", lag, minimum=min_lag)
  if lag > length - 1:
    raise ValueError(f"lag must be <= length - 1 = {length - 1}, got {lag}")
  return batch, length, lag, _validation.float_dtype(dtype)
