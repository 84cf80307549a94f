"""Baselines the sweep is compared with, on the same grids and draws.

The plain program (issue 12): what a researcher writes by hand for the
map, ``jax.jit`` of ``vmap`` over seeds of ``vmap`` over scales of a
``lax.scan`` whose step is ``jax.jvp`` of the transition, followed by the
two norms (``log ||v||``, ``v / ||v||``; ``log ||h||``). For the RNN the
transition is written inline, ``tanh(g * (W0 @ h))`` with ``W0`` shared per
seed; for the LSTM and the MLP it is ``ex.lstm.step`` / ``ex.mlp.step``
with params whose ``weight_scale`` is the vmapped leaf. No Kahan sum, no
scaled norm, no overflow mask: the numbers ``ex.sweep`` adds on top.

JAX per point: a Python loop of one hand-jitted JVP scan per grid point;
``ex.jvp_growth`` called per point as a user would (params are data, so it
compiles once); and the naive map, one ``jax.grad`` per (scale, length,
seed), one program per length, timed on a random subset and extrapolated.

PyTorch (only when ``import torch`` works): the naive autograd loop (subset,
extrapolated), ``torch.func`` jvp + vmap, and a hand-batched version (shared
``W0`` per seed, one ``bmm`` per step holding state and tangent), compiled
with ``torch.compile`` where that works.

Every baseline uses the draws ``ex.sweep`` makes (``seed_draws``), so its
numbers can be checked against the sweep's.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np

import exploding as ex

import _timing


def seed_draws(model, seeds, key=0):
  """Every seed's draws as ``ex.sweep`` makes them, stacked on axis 0.

  Seed s: ``fold_in(key, s)`` split into ``(init, state, probe, input)``
  keys; params ``model.init``, state ``model.state0``, probe ``N(0, 1)``
  over the flat state, unit norm. Returns a dict with ``params``,
  ``state0``, ``probe`` (the state's structure) and ``k_probe`` (key data,
  ``(seeds, 2)`` uint32, the key ``ex.jvp_growth`` needs for that probe).
  """
  base = jax.random.key(key)

  def one(s):
    k_init, k_state, k_probe, _ = jax.random.split(
        jax.random.fold_in(base, s), 4)
    state0 = model.state0(k_state)
    flat, unravel = ravel_pytree(state0)
    v = jax.random.normal(k_probe, (flat.size, 1), jnp.float32)[:, 0]
    return dict(params=model.init(k_init), state0=state0,
                probe=unravel(v / jnp.linalg.norm(v)),
                k_probe=jax.random.key_data(k_probe))
  return jax.jit(jax.vmap(one))(jnp.arange(seeds))


def map_layout(lg):
  """``(seeds, n_scales, T)`` -> ``(n_scales, T, seeds)``, like a map."""
  return np.transpose(np.asarray(lg), (1, 2, 0))


# ----------------------------------------------- the plain program


@functools.lru_cache(maxsize=None)
def plain_rnn(length):
  """jit(vmap seeds(vmap scales(scan(jvp)))) of ``tanh(g * (W0 @ h))``;
  ``(W0 (S, H, H), h0 (S, H), v0 (S, H), gs (G,))`` -> ``(log ||J v||,
  log ||h||)``, each ``(S, G, T)``."""

  def point(W0, h0, v0, g):
    f = lambda h: jnp.tanh(g * (W0 @ h))

    def body(carry, _):
      h, v, total = carry
      h, v = jax.jvp(f, (h,), (v,))
      n = jnp.linalg.norm(v)
      total = total + jnp.log(n)
      return (h, v / n, total), (total, jnp.log(jnp.linalg.norm(h)))
    init = (h0, v0, jnp.zeros((), h0.dtype))
    return jax.lax.scan(body, init, None, length=length)[1]

  scales = jax.vmap(point, (None, None, None, 0))
  return jax.jit(jax.vmap(scales, (0, 0, 0, None)))


@functools.lru_cache(maxsize=None)
def plain_model(step, length, layers=None):
  """The same plain program for a library transition ``step(p, s, x)``;
  ``layers(p)`` gives the per-step inputs (an MLP's layers), else none.
  ``(params (S, ...), state0, v0, gs (G,))`` -> ``(S, G, T)`` pair."""

  def norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))

  def point(params, s0, v0, g):
    p = params.replace(weight_scale=g)

    def body(carry, x):
      s, v, total = carry
      s, v = jax.jvp(lambda y: step(p, y, x), (s,), (v,))
      n = norm(v)
      total = total + jnp.log(n)
      v = jax.tree.map(lambda a: a / n, v)
      return (s, v, total), (total, jnp.log(norm(s)))
    init = (s0, v0, jnp.zeros((), jnp.float32))
    xs = None if layers is None else layers(p)
    return jax.lax.scan(body, init, xs, length=length)[1]

  scales = jax.vmap(point, (None, None, None, 0))
  return jax.jit(jax.vmap(scales, (0, 0, 0, None)))


def plain_thunk(model_name, draws, gs, length, sharding=None):
  """A thunk running the plain program on host arrays, as ``ex.sweep``
  returns them; ``sharding`` (a ``NamedSharding`` over the seeds axis)
  places the draws so jit partitions the program over devices."""
  if model_name == "rnn":
    p = draws["params"]
    args = (p.W0, draws["state0"], draws["probe"])
    program = plain_rnn(length)
  else:
    args = (draws["params"], draws["state0"], draws["probe"])
    step, layers = {"lstm": (ex.lstm.step, None),
                    "mlp": (ex.mlp.step, ex.mlp.layers)}[model_name]
    program = plain_model(step, length, layers)
  if sharding is not None:
    args = jax.device_put(args, sharding)
  gs = jnp.asarray(gs, jnp.float32)

  def run():
    lg, lh = program(*args, gs)
    return np.asarray(lg), np.asarray(lh)
  return run


# ------------------------------------------------------ per-point JAX


@functools.lru_cache(maxsize=None)
def _point_jvp(length):
  @jax.jit
  def run(p, h0, v0):
    def body(carry, _):
      h, v, total = carry
      h, v = jax.jvp(lambda y: ex.rnn.step(p, y), (h,), (v,))
      n = jnp.linalg.norm(v)
      return (h, v / n, total + jnp.log(n)), total + jnp.log(n)
    init = (h0, v0, jnp.zeros((), jnp.float32))
    return jax.lax.scan(body, init, None, length=length)[1]
  return run


def _points(draws, scales):
  """Every (seed, scale): ``(params with that scale, h0, probe, k_probe)``
  as device arrays, seed-major."""
  S = draws["state0"].shape[0]
  seed = [jax.tree.map(lambda a, s=s: a[s], draws) for s in range(S)]
  return [(d["params"].replace(weight_scale=jnp.float32(g)), d["state0"],
           d["probe"], jax.random.wrap_key_data(d["k_probe"]))
          for d in seed for g in scales]


def per_point_jvp_loop(draws, scales, length):
  """A callable running the grid as a loop of one hand-jitted JVP scan per
  point (one compile, a call per point)."""
  run = _point_jvp(length)
  points = _points(draws, scales)
  return lambda: [run(p, h0, v0) for p, h0, v0, _ in points]


def jvp_growth_per_point(draws, scales, length):
  """A callable running ``ex.jvp_growth(ex.rnn.step, params, h0, key=...)``
  per point, as a user calling the engine would: params are data, so one
  compile serves every point. Same probes as the sweep."""
  points = _points(draws, scales)
  return lambda: [ex.jvp_growth(ex.rnn.step, p, h0, length=length,
                                key=k).log_growth
                  for p, h0, _, k in points]


# ------------------------------------------ naive jax.grad per point


@functools.lru_cache(maxsize=None)
def _point_grad(length):
  def out(h0, p, u):
    h, _ = jax.lax.scan(lambda h, _: (ex.rnn.step(p, h), None), h0, None,
                        length=length)
    return jnp.dot(u, h)
  return jax.jit(jax.grad(out))


def naive_grad_subset(draws, scales, length, n_lengths, per_length, rng):
  """One ``jax.grad`` per (scale, length, seed) on a random subset.

  ``n_lengths`` random lengths, ``per_length`` random (scale, seed) points
  each. A per-point time ``a + b t`` is fitted by least squares and summed
  over the full grid (linear extrapolation). Compile time per length is
  averaged and multiplied by ``length`` (one program per length).
  """
  points = _points(draws, scales)
  lengths = np.sort(rng.choice(np.arange(1, length + 1), n_lengths,
                               replace=False))
  ts, secs, compiles = [], [], []
  for t in lengths:
    fn = _point_grad(int(t))
    with _timing.CompileLog() as log:
      p, h0, v0, _ = points[0]
      _timing.block(fn(h0, p, v0))
    compiles.append(log.total())
    for _ in range(per_length):
      p, h0, v0, _ = points[rng.integers(len(points))]
      t0 = time.perf_counter()
      grad = fn(h0, p, v0)
      with np.errstate(divide="ignore"):   # float32 underflow: log(0)
        float(np.log(np.linalg.norm(np.asarray(grad))))
      secs.append(time.perf_counter() - t0)
      ts.append(t)
  return _extrapolate(ts, secs, length, len(points),
                      compile_per_length=float(np.mean(compiles)))


def _extrapolate(ts, secs, length, points_per_length, compile_per_length=0.0):
  ts, secs = np.asarray(ts, float), np.asarray(secs, float)
  A = np.stack([np.ones_like(ts), ts], 1)
  (a, b), *_ = np.linalg.lstsq(A, secs, rcond=None)
  all_t = np.arange(1, length + 1)
  total = float(np.sum(np.maximum(a + b * all_t, secs.min()))) \
      * points_per_length
  return dict(run_s=total, sampled=len(secs), intercept_s=float(a),
              per_step_s=float(b), compile_per_length_s=compile_per_length,
              compile_s=compile_per_length * length)


# ------------------------------------------------------------- torch


def torch_available():
  try:
    import torch  # noqa: F401
    return True
  except Exception:  # pragma: no cover - depends on the environment
    return False


def torch_baselines(draws, scales, length, rng, n_lengths, per_length,
                    repeats, try_compile=True):
  """The PyTorch rows; each value a dict or a 'skipped: why' string."""
  import torch
  torch.manual_seed(0)
  dt = torch.float32
  W0 = torch.tensor(np.asarray(draws["params"].W0), dtype=dt)     # (S,H,H)
  h0 = torch.tensor(np.asarray(draws["state0"]), dtype=dt)        # (S,H)
  v0 = torch.tensor(np.asarray(draws["probe"]), dtype=dt)
  gs = torch.tensor(np.asarray(scales), dtype=dt)                  # (G,)
  S, G, H = W0.shape[0], gs.shape[0], W0.shape[1]
  out = {"version": torch.__version__, "threads": torch.get_num_threads()}

  # naive: one autograd backprop per (scale, length, seed)
  lengths = np.sort(rng.choice(np.arange(1, length + 1), n_lengths,
                               replace=False))
  ts, secs = [], []
  for t in lengths:
    for _ in range(per_length):
      s, gi = rng.integers(S), rng.integers(G)
      t0 = time.perf_counter()
      h = h0[s].clone().requires_grad_(True)
      y = h
      for _ in range(int(t)):
        y = torch.tanh(gs[gi] * (W0[s] @ y))
      (v0[s] @ y).backward()
      float(torch.log(torch.linalg.norm(h.grad)))
      secs.append(time.perf_counter() - t0)
      ts.append(t)
  out["naive_autograd"] = _extrapolate(ts, secs, length, S * G)

  # torch.func: jvp per step, vmapped over seeds and scales
  from torch.func import jvp, vmap

  def point(g, W, h, v):
    total = torch.zeros((), dtype=dt)
    logs = []
    for _ in range(length):
      h, v = jvp(lambda y: torch.tanh(g * (W @ y)), (h,), (v,))
      n = torch.linalg.norm(v)
      v = v / n
      total = total + torch.log(n)
      logs.append(total)
    return torch.stack(logs)

  grid = vmap(vmap(point, in_dims=(0, None, None, None)),
              in_dims=(None, 0, 0, 0))
  with torch.no_grad():
    f_func = lambda: grid(gs, W0, h0, v0)
    out["func_vmap"] = _torch_time(f_func, repeats)
    ref = f_func()

  # hand-batched: (S, 2G, H) bmm per step, state and tangent stacked
  W0T = W0.transpose(1, 2).contiguous()
  g3 = gs[None, :, None]

  def step(hs, vs, total):
    A = torch.bmm(torch.cat([hs, vs], 1), W0T)
    hn = torch.tanh(g3 * A[:, :G])
    vn = (1 - hn * hn) * (g3 * A[:, G:])
    n = torch.linalg.vector_norm(vn, dim=2, keepdim=True)
    total = total + torch.log(n[..., 0])
    return hn, vn / n, total

  def run_batched(step_fn):
    hs = h0[:, None, :].expand(S, G, H).contiguous()
    vs = v0[:, None, :].expand(S, G, H).contiguous()
    total = torch.zeros(S, G, dtype=dt)
    logs = torch.empty(length, S, G, dtype=dt)
    for t in range(length):
      hs, vs, total = step_fn(hs, vs, total)
      logs[t] = total
    return logs

  with torch.no_grad():
    out["batched_eager"] = _torch_time(lambda: run_batched(step), repeats)
    lg = run_batched(step).permute(1, 2, 0)                         # (S,G,T)
    out["batched_vs_func_maxdiff"] = float(
        (lg - ref).abs()[(gs <= 1.4).expand(S, G)].max())
    if try_compile:
      try:
        cstep = torch.compile(step, dynamic=False)
        t0 = time.perf_counter()
        run_batched(cstep)
        first = time.perf_counter() - t0
        r = _torch_time(lambda: run_batched(cstep), repeats)
        r["compile_s"] = first - r["median_s"]
        out["batched_compiled"] = r
      except Exception as e:  # inductor needs a C++ toolchain
        out["batched_compiled"] = ("skipped: torch.compile failed "
                                   f"({type(e).__name__}: {str(e)[:120]})")
    else:
      out["batched_compiled"] = ("skipped: time budget (compiled only at "
                                 "the first H)")
  return out


def _torch_time(fn, repeats):
  fn()
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return dict(median_s=statistics.median(ts), repeats=repeats)
