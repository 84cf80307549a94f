"""A model is data plus pure functions: what the engine and sweeps map.

``Model(init, step, state0, homogeneous)`` bundles ``init(key) -> params``
(a pytree of arrays whose top-level scalar leaves are the knobs a grid may
vary: ``weight_scale``, ``bias_scale``, ``forget_bias``, or any of yours),
the transition ``step(params, state, x) -> state`` and ``state0(key) ->
state``. The built-in ``rnn``, ``lstm`` and ``mlp`` are Models like any
user's; a flax cell is one in three lines::

    cell = flax.linen.GRUCell(features=64)
    model = ex.Model(
        init=lambda key: {"cell": cell.init(key, h0, x0)["params"],
                          "weight_scale": jnp.float32(1.0)},
        step=lambda p, h, x: cell.apply({"params": scaled(p)}, h, x)[0],
        state0=lambda key: jax.random.normal(key, (64,)))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["Model"]


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
  """A transition with its parameter and state draws.

  Attributes:
    init: ``init(key) -> params``, a pytree of arrays. A grid varies the
      top-level scalar float leaves by name (a mapping's keys, a
      dataclass's fields).
    step: ``step(params, state, x) -> state``; ``x`` is one step's input,
      or ``None`` for an input-free model.
    state0: ``state0(key) -> state``, the initial state of one seed.
    homogeneous: whether the state may be renormalised (positively
      homogeneous of degree one in the state, for this model's own inputs):
      a bool, or ``params -> bool`` (traced; decided per grid point, e.g.
      ``lambda p: p.bias_scale == 0``). Never guessed from values.
    inputs: ``inputs(params, key, length) -> xs`` (leading axis
      ``length``) for a model whose steps read inputs of their own (an
      MLP's layers), or ``None``: ``x`` is ``None`` unless a sweep is given
      ``inputs=``. It must not depend on the knobs.
    input_shape: one step's input shape, for ``ex.sweep(inputs=
      "gaussian")``; ``None`` if the model takes no input.
    advance: optional fused batched step for forward mode, ``advance(params,
      knobs, H, V, x) -> (H', J V)`` with flat states ``H`` ``(n, d)``,
      tangents ``V`` ``(n, p, d)`` and ``knobs`` name -> ``(n,)`` (the RNN's
      one GEMM of ``[H; V] @ W0^T``); it must equal the generic path.
    name: a label, used in maps and cache file names.
    settings: JSON-serialisable settings recorded in a map's config.

  Equality is identity: a sweep compiles once per Model object, so build
  it once (the built-in constructors cache theirs).
  """

  init: Callable[[Any], Any]
  step: Callable[[Any, Any, Any], Any]
  state0: Callable[[Any], Any]
  homogeneous: Any = False
  inputs: Callable[[Any, Any, int], Any] | None = None
  input_shape: tuple[int, ...] | None = None
  advance: Callable[..., Any] | None = None
  name: str = "model"
  settings: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for field in ("init", "step", "state0"):
      if not callable(getattr(self, field)):
        raise TypeError(f"Model.{field} must be callable, got "
                        f"{getattr(self, field)!r}")
    if not (isinstance(self.homogeneous, bool) or callable(self.homogeneous)):
      raise TypeError("Model.homogeneous must be a bool or a function "
                      f"params -> bool, got {self.homogeneous!r}")


def normal_state(key, shape, dtype):
  """The built-in models' ``state0``: N(0, 1) drawn in float32, then cast
  (every dtype starts from the same numbers)."""
  return jax.random.normal(key, shape, jnp.float32).astype(dtype)


def bias_free(p) -> jax.Array:
  """The built-in ReLU/linear models' ``homogeneous``: without bias the
  transition is positively homogeneous (decided per grid point from the
  traced ``bias_scale`` leaf)."""
  return p.bias_scale == 0
