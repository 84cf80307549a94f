"""Prototypes of performance levers for the sweep engine (benchmark-only).

Each builds the same program as ``ex.sweep("rnn", method="jvp")`` for the
workload's grid (one ``W0``, ``U``, state and probe per seed from
``fold_in(key, seed)``, every scale of a seed sharing them), with one change,
so it can be timed side by side with ``ex.sweep`` and checked against it:

- ``engine``: the generic engine path (``_jvp_core``: ``linearize`` and a
  per-scale ``vmap``), with the draws inside the program and ``lax.scan``
  ``unroll=`` exposed: ``ex.sweep``'s RNN path before it pushed all scales
  through one GEMM.
- ``stacked``: all scales of a seed at once, primal and tangent stacked
  into one matrix, so each step is one GEMM ``[H; V] @ W0^T`` of ``2 n_g``
  rows (what ``ex.sweep`` now does); with ``cheap_norm`` a plain
  ``sqrt(sum v^2)`` norm (the tangent is unit-normalised every step, so one
  step cannot overflow float32 unless ``||J_t|| > 1e19``) and no
  compensated sum: a lever measured, not applied.
- ``sweep_with_compiler_options``: ``ex.sweep`` with other XLA compiler
  options for its programs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import jacobian as J


def _seed_setup(key, seed, hidden, input_size, dtype=jnp.float32):
  """Exactly the draws ``sweep._per_seed`` makes for an RNN."""
  k = jax.random.fold_in(key, seed)
  k_init, k_state, _k_probe, _ = jax.random.split(k, 4)
  p0 = ex.rnn.init(k_init, hidden, input_size=input_size, dtype=dtype)
  h0 = jax.random.normal(k_state, (hidden,), jnp.float32).astype(dtype)
  return p0, h0, _k_probe


def _finish(lg, lh):
  step = J.overflow_index(lh)
  return J._mask_after(lg, step), lh, step


@functools.lru_cache(maxsize=None)
def engine_program(hidden, input_size, length, seeds, unroll=1):
  """``_jvp_core`` with ``unroll``; returns jit(fn(key_data, gs) -> lg)."""

  def one_scale(p0, h0, kp, xs, g):
    p = p0.replace(weight_scale=g)
    f = lambda h, x: ex.rnn.step(p, h, x)
    V = J._probe(kp, hidden, 1, h0.dtype)

    def body(carry, x):
      h, V, scale, total, comp = carry
      h, lin = jax.linearize(lambda y: f(y, x), h)
      Vn = jax.vmap(lin, 1, 1)(V)
      h, scale, lh = J._renormalize_state(h, False, scale)
      V, lg = J.normalize(Vn, axis=0)
      total, comp = J.kahan_add(total, comp, lg)
      return (h, V, scale, total, comp), (total, lh)

    z = jnp.zeros(1, jnp.float32)
    init = (h0, V, J._zero_scale(jnp.float32), z, z)
    _, (lg, lh) = jax.lax.scan(body, init, xs, length=length, unroll=unroll)
    return _finish(lg[:, 0], lh)[0]

  return _grid_program(one_scale, hidden, input_size, length, seeds)


@functools.lru_cache(maxsize=None)
def stacked_program(hidden, input_size, length, seeds, unroll=1,
                    cheap_norm=False):
  """All scales of a seed at once, primal and tangent in one GEMM."""

  def per_seed(p0, h0, kp, xs, gs):
    n = gs.shape[0]
    g = gs[:, None]
    V = jnp.broadcast_to(J._probe(kp, hidden, 1, h0.dtype)[:, 0],
                         (n, hidden))
    Hs = jnp.broadcast_to(h0, (n, hidden))
    W0T = p0.W0.T

    def norm(v):
      if cheap_norm:
        ln = 0.5 * jnp.log(jnp.sum(v * v, axis=1))
        return v * jnp.exp(-ln)[:, None], ln
      return J.normalize(v, axis=1)

    def body(carry, x):
      Hs, V, total, comp = carry
      A = jnp.concatenate([Hs, V], 0) @ W0T            # one (2n, H) GEMM
      Hn = jnp.tanh(g * A[:n] + (x @ p0.U.T + p0.b))
      Vn = (1 - Hn * Hn) * (g * A[n:])
      lh = J.log_norm(Hn, axis=1) if not cheap_norm else (
          0.5 * jnp.log(jnp.sum(Hn * Hn, axis=1)))
      V, lg = norm(Vn)
      if cheap_norm:
        total = total + lg
      else:
        total, comp = J.kahan_add(total, comp, lg)
      return (Hn, V, total, comp), (total, lh)

    z = jnp.zeros(n, jnp.float32)
    _, (lg, lh) = jax.lax.scan(body, (Hs, V, z, z), xs, length=length,
                               unroll=unroll)
    step = J.overflow_index(lh)
    return J._mask_after(lg, step).T                    # (n, T)

  def program(key_data, gs):
    key = jax.random.wrap_key_data(key_data)
    xs = jnp.zeros((length, input_size), jnp.float32)

    def seed_fn(s):
      p0, h0, kp = _seed_setup(key, s, hidden, input_size)
      return per_seed(p0, h0, kp, xs, gs)
    return jax.vmap(seed_fn)(jnp.arange(seeds))          # (seeds, n, T)

  return jax.jit(program)


def _grid_program(one_scale, hidden, input_size, length, seeds):
  def program(key_data, gs):
    key = jax.random.wrap_key_data(key_data)
    xs = jnp.zeros((length, input_size), jnp.float32)

    def seed_fn(s):
      p0, h0, kp = _seed_setup(key, s, hidden, input_size)
      return jax.vmap(lambda g: one_scale(p0, h0, kp, xs, g))(gs)
    return jax.vmap(seed_fn)(jnp.arange(seeds))          # (seeds, n, T)

  return jax.jit(program)


def key_data(seed=0):
  return jax.random.key_data(jax.random.key(seed))


def as_map_layout(out):
  """(seeds, n_scales, T) -> (n_scales, T, seeds), like GradientMap."""
  return np.transpose(np.asarray(out), (1, 2, 0))


def sweep_with_compiler_options(options, model, **kw):
  """A thunk running ``ex.sweep`` with its programs compiled under XLA
  ``options`` (a dict; ``None`` for XLA's defaults). The sweep caches its
  programs per options, so this leaves ``ex.sweep``'s own untouched."""
  import importlib
  sw = importlib.import_module("exploding.sweep")
  items = tuple(sorted((options or {}).items()))

  def fn():
    saved = sw._compiler_options
    sw._compiler_options = lambda: items
    try:
      return ex.sweep(model, **kw).log_growth
    finally:
      sw._compiler_options = saved
  return fn
