"""Baselines the sweep is compared with, on the same RNN grid.

JAX: a Python loop of one hand-jitted forward-mode (JVP) program per grid
point; ``ex.jvp_growth`` called per point as a user would (a fresh
``functools.partial`` per point, so it compiles per point); and the naive
map, one ``jax.grad`` per (scale, length, seed), which compiles one program
per length and is timed on a random subset and extrapolated.

PyTorch (only when ``import torch`` works): the naive autograd loop (subset,
extrapolated), ``torch.func`` jvp + vmap, and a hand-batched version (shared
``W0`` per seed, one ``bmm`` per step holding state and tangent), compiled
with ``torch.compile`` where that works.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import jacobian as J

import _levers
import _timing


def seed_params(hidden, input_size, seeds, key=0):
  """Per-seed ``(W0, U, b, h0, probe)`` as numpy, drawn as the sweep does."""
  k = jax.random.key(key)
  out = []
  for s in range(seeds):
    p0, h0, kp = _levers._seed_setup(k, s, hidden, input_size)
    v0 = J._probe(kp, hidden, 1, jnp.float32)[:, 0]
    out.append(tuple(np.asarray(a) for a in (p0.W0, p0.U, p0.b, h0, v0)))
  return out


# ------------------------------------------------------ (a) per-point JVP


@functools.lru_cache(maxsize=None)
def _point_jvp(length):
  @jax.jit
  def run(W0, U, b, h0, v0, g, xs):
    p = ex.rnn.RNNParams(W0, U, b, g)
    f = lambda h, x: ex.rnn.step(p, h, x)

    def body(carry, x):
      h, v, total = carry
      h, v = jax.jvp(lambda y: f(y, x), (h,), (v,))
      v, lg = J.normalize(v)
      return (h, v, total + lg), total + lg
    _, lg = jax.lax.scan(body, (h0, v0, jnp.zeros((), jnp.float32)), xs)
    return lg
  return run


def per_point_jvp_loop(scales, length, params, input_size):
  """Returns a callable running the whole grid as a loop of jitted JVPs."""
  run = _point_jvp(length)
  xs = jnp.zeros((length, input_size), jnp.float32)
  dev = [tuple(jnp.asarray(a) for a in p) for p in params]
  gs = [jnp.asarray(g, jnp.float32) for g in scales]

  def loop():
    return [run(*p, g, xs) for p in dev for g in gs]
  return loop


def jvp_growth_per_point(scales, length, params, input_size, n_points, rng):
  """``ex.jvp_growth`` per point (fresh closure each time, so it compiles
  each time): seconds per point, median over ``n_points`` random points."""
  xs = jnp.zeros((length, input_size), jnp.float32)
  times = []
  for _ in range(n_points):
    W0, U, b, h0, _ = params[rng.integers(len(params))]
    g = float(scales[rng.integers(len(scales))])
    p = ex.rnn.RNNParams(jnp.asarray(W0), jnp.asarray(U), jnp.asarray(b),
                         jnp.asarray(g, jnp.float32))
    t0 = time.perf_counter()
    _timing.block(ex.jvp_growth(functools.partial(ex.rnn.step, p),
                                jnp.asarray(h0), xs, key=jax.random.key(1)))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


# ------------------------------------------ (b) naive jax.grad per point


@functools.lru_cache(maxsize=None)
def _point_grad(length, input_size):
  def out(h0, W0, U, b, g, u):
    p = ex.rnn.RNNParams(W0, U, b, g)
    xs = jnp.zeros((length, input_size), jnp.float32)
    h, _ = jax.lax.scan(lambda h, x: (ex.rnn.step(p, h, x), None), h0, xs)
    return jnp.dot(u, h)
  return jax.jit(jax.grad(out))


def naive_grad_subset(scales, length, seeds, params, input_size, n_lengths,
                      per_length, rng):
  """One ``jax.grad`` per (scale, length, seed) on a random subset.

  ``n_lengths`` random lengths, ``per_length`` random (scale, seed) points
  each. A per-point time ``a + b t`` is fitted by least squares and summed
  over the full grid (linear extrapolation). Compile time per length is
  averaged and multiplied by ``length`` (one program per length).
  """
  lengths = np.sort(rng.choice(np.arange(1, length + 1), n_lengths,
                               replace=False))
  ts, secs, compiles = [], [], []
  for t in lengths:
    fn = _point_grad(int(t), input_size)
    with _timing.CompileLog() as log:
      W0, U, b, h0, v0 = params[0]
      _timing.block(fn(h0, W0, U, b, np.float32(1.0), v0))
    compiles.append(log.total())
    for _ in range(per_length):
      W0, U, b, h0, v0 = params[rng.integers(len(params))]
      g = np.float32(scales[rng.integers(len(scales))])
      t0 = time.perf_counter()
      grad = fn(h0, W0, U, b, g, v0)
      with np.errstate(divide="ignore"):   # float32 underflow: log(0)
        float(np.log(np.linalg.norm(np.asarray(grad))))
      secs.append(time.perf_counter() - t0)
      ts.append(t)
  return _extrapolate(ts, secs, length, len(scales) * seeds,
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


# ------------------------------------------------------------- (c) torch


def torch_available():
  try:
    import torch  # noqa: F401
    return True
  except Exception:  # pragma: no cover - depends on the environment
    return False


def torch_baselines(scales, length, seeds, params, input_size, rng,
                    n_lengths, per_length, repeats, try_compile=True):
  """The PyTorch rows; each value a dict or a 'skipped: why' string."""
  import torch
  torch.manual_seed(0)
  dt = torch.float32
  W0 = torch.tensor(np.stack([p[0] for p in params]), dtype=dt)   # (S,H,H)
  U = torch.tensor(np.stack([p[1] for p in params]), dtype=dt)
  b = torch.tensor(np.stack([p[2] for p in params]), dtype=dt)
  h0 = torch.tensor(np.stack([p[3] for p in params]), dtype=dt)   # (S,H)
  v0 = torch.tensor(np.stack([p[4] for p in params]), dtype=dt)
  gs = torch.tensor(np.asarray(scales), dtype=dt)                  # (G,)
  S, G, H = W0.shape[0], gs.shape[0], W0.shape[1]
  x = torch.zeros(input_size, dtype=dt)
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
        y = torch.tanh(gs[gi] * (W0[s] @ y) + U[s] @ x + b[s])
      (v0[s] @ y).backward()
      float(torch.log(torch.linalg.norm(h.grad)))
      secs.append(time.perf_counter() - t0)
      ts.append(t)
  out["naive_autograd"] = _extrapolate(ts, secs, length, S * G)

  # torch.func: jvp per step, vmapped over seeds and scales
  from torch.func import jvp, vmap

  def point(g, W, Uw, bw, h, v):
    c = Uw @ x + bw
    total = torch.zeros((), dtype=dt)
    logs = []
    for _ in range(length):
      h, v = jvp(lambda y: torch.tanh(g * (W @ y) + c), (h,), (v,))
      n = torch.linalg.norm(v)
      v = v / n
      total = total + torch.log(n)
      logs.append(total)
    return torch.stack(logs)

  grid = vmap(vmap(point, in_dims=(0, None, None, None, None, None)),
              in_dims=(None, 0, 0, 0, 0, 0))
  with torch.no_grad():
    f_func = lambda: grid(gs, W0, U, b, h0, v0)
    out["func_vmap"] = _torch_time(f_func, repeats)
    ref = f_func()

  # hand-batched: (S, 2G, H) bmm per step, state and tangent stacked
  W0T = W0.transpose(1, 2).contiguous()
  c = (torch.einsum("shi,i->sh", U, x) + b)[:, None, :]            # (S,1,H)
  g3 = gs[None, :, None]

  def step(hs, vs, total):
    A = torch.bmm(torch.cat([hs, vs], 1), W0T)
    hn = torch.tanh(g3 * A[:, :G] + c)
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
        (lg - ref)[:, :, :].abs()[(gs <= 1.4).expand(S, G)].max())
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
        out["batched_compiled"] = f"skipped: torch.compile failed ({type(e).__name__}: {str(e)[:120]})"
    else:
      out["batched_compiled"] = ("skipped: time budget (compiled only at "
                                 "the first H; no gain there over eager)")
  return out


def _torch_time(fn, repeats):
  fn()
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return dict(median_s=statistics.median(ts), repeats=repeats)
