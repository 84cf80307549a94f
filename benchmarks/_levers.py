"""Performance levers of the sweep, each ``ex.sweep`` with one change
(benchmark-only), timed side by side with it and checked against it:

- ``generic_rnn``: the RNN ``Model`` without its fused ``advance``, so the
  sweep runs the generic core path (``vmap`` over the points of
  ``jax.jvp`` of ``ex.rnn.step``: two GEMMs per step, state and tangent)
  instead of one GEMM ``[H; V] @ W0^T``.
- ``sweep_with_compiler_options``: ``ex.sweep`` with other XLA compiler
  options for its programs (the sweep runs XLA CPU at O1).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import exploding as ex


@functools.lru_cache(maxsize=None)
def generic_rnn(hidden):
  """``ex.rnn.model(hidden)`` with ``advance=None``. Built once per size:
  a sweep compiles once per Model object, so a fresh ``replace`` per call
  would recompile every call."""
  return dataclasses.replace(ex.rnn.model(hidden), advance=None)


def sweep_with_compiler_options(options, model, **kw):
  """A thunk running ``ex.sweep`` with its programs compiled under XLA
  ``options`` (a dict; ``None`` for XLA's defaults). The sweep caches its
  programs per options, so this leaves ``ex.sweep``'s own untouched."""
  sw = importlib.import_module("exploding.sweep")
  items = tuple(sorted((options or {}).items()))

  def fn():
    saved = sw._compiler_options
    sw._compiler_options = lambda: items
    try:
      return ex.sweep(model, **kw)
    finally:
      sw._compiler_options = saved
  return fn
