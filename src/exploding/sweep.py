"""Sweeps: growth maps over weight scale x steps x seed in one program.

For each seed the model's unit-scale matrices ``W0``, the initial state and
the probe are drawn once from ``fold_in(key, seed)``, in a small program of
their own; every weight scale of the grid shares them. The transition
multiplies the scale after the matmul, ``g * (W0 @ h)``, so ``vmap`` over
scales turns the per-point matvecs into one GEMM per step (for the RNN's
forward mode, states and tangents of every scale are the rows of a single
GEMM), and the engine's single ``lax.scan`` yields every prefix length
1..T at once: one compilation per configuration, none per length.

The scale axis is split into chunks (bounded memory, one file each in the
cache, a unit of resumption) and each chunk is sharded over every visible
device with ``shard_map`` on a 1-D mesh, padded to a multiple of the device
count. Any device count gives the same numbers (each grid point's program
is the same; only where it runs changes).

On a multi-core CPU, expose one XLA host device per core before jax starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` (the CLI and
the figure runner do this when XLA_FLAGS is unset).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import tqdm.auto as tqdm

from exploding import _validation, activations, jacobian
from exploding.activations import ACTIVATIONS
from exploding.maps import GradientMap, save_npz_atomic
from exploding.models import lstm, mlp, rnn

__all__ = ["sweep", "MODELS", "METHODS"]

MODELS = ("rnn", "lstm", "mlp")
METHODS = ("jvp", "vjp", "lyapunov")
_MEMORY_BUDGET = 1 << 30   # bytes per chunk, for the default chunk_size
_UNROLL = 4   # generic paths' lax.scan unroll: 1.2-1.3x faster on CPU


def sweep(model: str, *, weight_scales: Any, length: int, seeds: int = 8,
          hidden: int | None = None, activation: str = "tanh",
          bias_scale: float = 0.0, init: str = "gaussian",
          method: str = "jvp", key: Any = 0, dtype: Any = None,
          state0: Any = None, inputs: Any = None, k: int = 1,
          chunk_size: int | None = None, cache_dir: str | None = None,
          progress: bool = True, precision: str = "highest",
          **model_kwargs) -> GradientMap:
  """Measures Jacobian-product growth on a grid of weight scales and seeds.

  Args:
    model: ``"rnn"``, ``"lstm"`` or ``"mlp"`` (for ``"mlp"``, ``length`` is
      the depth and the state is a batch: ``width=``, ``batch=`` (default
      ``hidden`` and 16), ``batchnorm=``, ``residual=``; ``"lstm"`` takes
      ``forget_bias=``; ``"rnn"``/``"lstm"`` take ``input_size=``).
    weight_scales: 1-D positive scales (sigma_w).
    length: T (steps, or layers for an MLP), >= 1.
    seeds: number of seeds, >= 1; seed s uses ``fold_in(key, s)``.
    hidden: state size (default 128; ``width`` for an MLP).
    activation, bias_scale, init: as in the models.
    method: ``"jvp"`` (forward, all prefixes), ``"vjp"`` (backprop, all
      lags) or ``"lyapunov"`` (``k`` exponents by QR).
    key: int seed or PRNG key.
    dtype: computation dtype (``None``: default float).
    state0: an initial state shared by all seeds (default: ``N(0, 1)`` per
      entry, drawn per seed).
    inputs: ``None`` (zero input), ``"gaussian"`` (i.i.d. ``N(0, 1)`` per
      step, per seed; needs ``input_size``) or a ``(T, input_size)`` array.
    chunk_size: grid points (scales x seeds) per compiled call; the default
      keeps a chunk's working set near 1 GiB.
    cache_dir: store each finished chunk there (atomic writes); a rerun of
      the same configuration reuses them, so an interrupted sweep resumes.
    progress: a tqdm bar over chunks (shown on a terminal).
    precision: matmul precision inside the engine.

  Returns:
    A ``GradientMap`` with ``log_growth`` of shape
    ``(n_scales, length, seeds)``.

  Example:
    >>> import exploding as ex
    >>> m = ex.sweep("rnn", weight_scales=[0.5, 1.0, 2.0], length=64,
    ...              seeds=2, hidden=32, progress=False)
    >>> m.log_growth.shape
    (3, 64, 2)
  """
  spec = _Spec.make(model, weight_scales, length, seeds, hidden, activation,
                    bias_scale, init, method, key, dtype, state0, inputs, k,
                    precision, model_kwargs)
  devices = _devices(spec)
  n_dev = len(devices)
  per_chunk = _scales_per_chunk(spec, chunk_size, n_dev)
  gs = spec.weight_scales
  n_chunks = math.ceil(len(gs) / per_chunk)
  padded = np.concatenate([gs, np.full(n_chunks * per_chunk - len(gs), gs[-1])])
  run = _compiled(spec.static, tuple(devices), _compiler_options())
  draws = None
  parts = []
  for c in tqdm.trange(n_chunks, desc=f"sweep {model}", unit="chunk",
                       disable=None if progress else True, leave=False):
    chunk = padded[c * per_chunk:(c + 1) * per_chunk]
    path = _chunk_path(cache_dir, spec, chunk)
    part = _read_chunk(path)
    if part is None:
      if draws is None:
        draws = _draw_program(_draw_static(spec.static), tuple(devices),
                              _compiler_options())(_key_data(spec.key))
      part = run(draws, _device_put(chunk.astype(spec.dtype), devices),
                 spec.state0, spec.xs)
      part = {k: _to_numpy(v) for k, v in part.items()}
      if path is not None:
        save_npz_atomic(path, {**part, "chunk_hash": np.array(_hash(
            spec.hash_config, chunk))})
    parts.append(part)
  out = {k: np.concatenate([p[k] for p in parts], axis=1)[:, :len(gs)]
         for k in parts[0]}
  return _to_map(spec, out)


# ------------------------------------------------------------- the program


class _Spec:
  """A validated sweep configuration."""

  @staticmethod
  def make(model, weight_scales, length, seeds, hidden, activation,
           bias_scale, init, method, key, dtype, state0, inputs, k,
           precision, model_kwargs):
    s = _Spec()
    _validation.check_choice("model", model, MODELS)
    _validation.check_choice("method", method, METHODS)
    _validation.check_choice("activation", activation, ACTIVATIONS)
    _validation.check_choice("init", init, ("gaussian", "orthogonal",
                                            "identity"))
    gs = np.atleast_1d(np.asarray(weight_scales, np.float64))
    if gs.ndim != 1 or gs.size < 1:
      raise ValueError("weight_scales must be a non-empty 1-D sequence")
    _validation.check_positive("weight_scales", gs)
    _validation.check_nonnegative("bias_scale", bias_scale)
    length = _validation.check_int("length", length, 1)
    seeds = _validation.check_int("seeds", seeds, 1)
    kw = dict(model_kwargs)
    if model == "mlp":
      width = kw.pop("width", hidden if hidden is not None else 128)
      hidden = _validation.check_int("width", width, 1)
      kw["batch"] = _validation.check_int("batch", kw.get("batch", 16), 1)
      kw["batchnorm"] = bool(kw.get("batchnorm", False))
      kw["residual"] = bool(kw.get("residual", False))
      if kw["batchnorm"] and kw["batch"] < 2:
        raise ValueError("batch must be >= 2 with batchnorm")
      allowed = {"batch", "batchnorm", "residual"}
    else:
      hidden = _validation.check_int("hidden", 128 if hidden is None
                                     else hidden, 1)
      kw["input_size"] = _validation.check_int(
          "input_size", kw.get("input_size", 0), 0)
      allowed = {"input_size"}
      if model == "lstm":
        kw["forget_bias"] = float(kw.get("forget_bias", 1.0))
        allowed.add("forget_bias")
    unknown = set(kw) - allowed
    if unknown:
      raise TypeError(f"unknown arguments for model {model!r}: "
                      f"{sorted(unknown)}; allowed {sorted(allowed)}")
    k = _validation.check_int("k", k, 1)
    s.dtype = _validation.float_dtype(dtype)
    s.weight_scales, s.key, s.method = gs, key, method
    s.state0 = None if state0 is None else jax.tree.map(
        lambda a: jnp.asarray(a, s.dtype), state0)
    _validation.check_finite("state0", s.state0)
    s.xs, input_kind = _inputs(model, inputs, length, kw, s.dtype)
    s.static = (model, method, length, seeds, hidden, activation,
                float(bias_scale), init, str(s.dtype), k, precision,
                input_kind, s.state0 is not None, tuple(sorted(kw.items())))
    s.config = dict(model=model, method=method, length=length, seeds=seeds,
                    hidden=hidden, activation=activation,
                    bias_scale=float(bias_scale), init=init,
                    dtype=str(s.dtype), k=k, precision=precision,
                    inputs=input_kind, key=_key_list(key),
                    weight_scales=gs.tolist(), **kw)
    if s.state0 is not None:
      s.config["state0_sha"] = _hash(*map(np.asarray,
                                          jax.tree.leaves(s.state0)))
    if s.xs is not None and input_kind == "array":
      s.config["inputs_sha"] = _hash(np.asarray(s.xs))
    from exploding import __version__
    s.hash_config = {**s.config, "version": __version__}
    s.hash_config.pop("weight_scales")
    s.state_size = _state_size(model, hidden, kw)
    _check_state0(s, model, hidden, kw)
    return s


def _inputs(model, inputs, length, kw, dtype):
  if model == "mlp":
    if inputs is not None:
      raise ValueError("inputs is not used by model='mlp'")
    return None, "none"
  n_in = kw["input_size"]
  if inputs is None:
    return (None, "none") if n_in == 0 else (
        jnp.zeros((length, n_in), dtype), "zeros")
  if isinstance(inputs, str):
    _validation.check_choice("inputs", inputs, ("gaussian",))
    if n_in < 1:
      raise ValueError("inputs='gaussian' needs input_size >= 1")
    return None, "gaussian"
  xs = jnp.asarray(inputs, dtype)
  if xs.shape != (length, n_in):
    raise ValueError(f"inputs must have shape (length, input_size) = "
                     f"{(length, n_in)}, got {xs.shape}")
  _validation.check_finite("inputs", xs)
  return xs, "array"


def _state_size(model, hidden, kw):
  return {"rnn": hidden, "lstm": 2 * hidden,
          "mlp": hidden * kw.get("batch", 1)}[model]


def _check_state0(s, model, hidden, kw):
  if s.state0 is None:
    return
  want = {"rnn": [(hidden,)], "lstm": [(hidden,), (hidden,)],
          "mlp": [(kw.get("batch"), hidden)]}[model]
  got = [a.shape for a in jax.tree.leaves(s.state0)]
  if got != want:
    raise ValueError(f"state0 must have shapes {want} for model {model!r}, "
                     f"got {got}")


def _scales_per_chunk(spec, chunk_size, n_dev):
  seeds = spec.static[3]
  if chunk_size is None:
    T, n = spec.static[2], spec.state_size
    per_point = 8 * T * 3 + 4 * n * 8
    if spec.method == "vjp":
      per_point += 4 * T * n * 3
    if spec.method == "lyapunov":
      per_point += 4 * n * spec.static[9] * 6
    chunk_size = max(1, _MEMORY_BUDGET // per_point)
  chunk_size = _validation.check_int("chunk_size", chunk_size, 1)
  per = max(1, chunk_size // seeds)
  per = min(per, len(spec.weight_scales))
  return math.ceil(per / n_dev) * n_dev


def _devices(spec):
  """Every device, except: XLA on CPU with several host devices hangs on
  programs that call LAPACK's QR inside the sharded scan (measured here:
  Lyapunov sweeps and orthogonal init at hidden >= 32, jax 0.10), so those
  run on one CPU device."""
  devices = jax.devices()
  uses_qr = spec.method == "lyapunov" or spec.static[7] == "orthogonal"
  if uses_qr and jax.default_backend() == "cpu":
    return devices[:1]
  return devices


def _compiler_options():
  """XLA CPU at backend optimisation level 1: compiles the sweep's programs
  about 2x faster (threefry's unrolled rounds dominate) at the same run
  time (``benchmarks/``); other backends keep their defaults."""
  if jax.default_backend() == "cpu":
    return (("xla_backend_optimization_level", 1),)
  return ()


@functools.lru_cache(maxsize=64)
def _draw_program(static, devices, options):
  """Draws every seed's parameters, state, probe and inputs, replicated on
  every device: a small program, apart from the scan so that the scan's
  program holds no RNG (threefry is most of XLA CPU's compile time) and so
  that sweeps differing only in ``length`` or method share it."""
  mesh = Mesh(np.array(devices), ("grid",))
  seeds = static[3]

  def draw(base_key):
    keys = jax.vmap(lambda s: jax.random.fold_in(
        jax.random.wrap_key_data(base_key), s))(jnp.arange(seeds))
    return jax.vmap(functools.partial(_draw_seed, static))(keys)

  return jax.jit(draw, out_shardings=NamedSharding(mesh, P()),
                 compiler_options=dict(options) or None)


def _draw_static(static):
  """The part of ``static`` that the draws depend on."""
  (model, method, length, seeds, hidden, activation, bias_scale, init,
   dtype, k, _, input_kind, has_state0, kw) = static
  uses_length = model == "mlp" or input_kind == "gaussian"
  # The activation is a static field of the params, not a draw: the scan
  # program sets it, so sweeps over activations share one draw program.
  return (model, None, length if uses_length else None, seeds, hidden,
          None, bias_scale, init, dtype, k if method == "lyapunov"
          else 1, None, input_kind, has_state0, kw)


def _draw_seed(static, key):
  """One seed's draws from ``fold_in(key, seed)``."""
  (model, _, length, _, hidden, activation, bias_scale, init, dtype, k, _,
   input_kind, has_state0, kw) = static
  kw = dict(kw)
  k_init, k_state, k_probe, k_in = jax.random.split(key, 4)
  activation = activation or "tanh"   # placeholder; see _draw_static
  if model == "rnn":
    p0 = rnn.init(k_init, hidden, bias_scale=bias_scale,
                  activation=activation, init=init,
                  input_size=kw["input_size"], dtype=dtype)
    shape = (hidden,)
  elif model == "lstm":
    p0 = lstm.init(k_init, hidden, forget_bias=kw["forget_bias"], init=init,
                   bias_scale=bias_scale, input_size=kw["input_size"],
                   dtype=dtype)
    shape = (2, hidden)
  else:
    p0 = mlp.init(k_init, hidden, length, bias_scale=bias_scale,
                  activation=activation, init=init,
                  batchnorm=kw["batchnorm"], residual=kw["residual"],
                  dtype=dtype)
    shape = (kw["batch"], hidden)
  out = dict(p0=p0)
  if not has_state0:
    state0 = jax.random.normal(k_state, shape, jnp.float32).astype(dtype)
    out["state0"] = tuple(state0) if model == "lstm" else state0
  size = _state_size(model, hidden, kw)
  out["probe"] = jacobian.probe_normals(k_probe, size, k)
  if input_kind == "gaussian":
    out["xs"] = jax.random.normal(k_in, (length, kw["input_size"]),
                                  jnp.float32).astype(dtype)
  return out


@functools.lru_cache(maxsize=64)
def _compiled(static, devices, options):
  """One jitted, sharded program per static configuration."""
  mesh = Mesh(np.array(devices), ("grid",))
  point = functools.partial(_per_seed, static)

  def local(draws, gs, state0, xs):
    return jax.vmap(point, in_axes=(0, None, None, None))(draws, gs, state0, xs)

  sharded = jax.shard_map(local, mesh=mesh,
                          in_specs=(P(), P("grid"), P(), P()),
                          out_specs=P(None, "grid"), check_vma=False)
  return jax.jit(sharded, compiler_options=dict(options) or None)


def _per_seed(static, draws, gs, state0, xs):
  """All scales ``gs`` of one seed; returns dict of ``(n_g, ...)`` arrays."""
  (model, method, length, seeds, hidden, activation, bias_scale, init,
   dtype, k, precision, input_kind, _, kw) = static
  kw = dict(kw)
  p0, probe = draws["p0"], draws["probe"]
  if model != "lstm":
    p0 = p0.replace(activation=activation)
  step = dict(rnn=rnn.step, lstm=lstm.step, mlp=mlp.step)[model]
  if model == "mlp":
    xs = mlp.layers(p0)
  if state0 is None:
    state0 = draws["state0"]
  if input_kind == "gaussian":
    xs = draws["xs"]
  homogeneous = _homogeneous(model, activation, bias_scale, input_kind, kw)
  vec0, unravel = ravel_pytree(state0)

  if model == "rnn" and method == "jvp":
    # A zero input adds exactly U @ 0 = 0: no (T, hidden) drive to store,
    # so memory stays flat in T.
    drive_xs = None if input_kind == "zeros" else xs
    return _rnn_jvp(p0, gs.astype(dtype), vec0, drive_xs, probe, length,
                    homogeneous, precision)

  def one_scale(g):
    p = p0.replace(weight_scale=g.astype(dtype))
    f = jacobian._FlatTransition(functools.partial(step, p), unravel, None)
    if method == "jvp":   # (the RNN's took _rnn_jvp above)
      out = jacobian._jvp_core(f, vec0, xs, probe, length, 1, homogeneous,
                               precision, False, unroll=_UNROLL)
      return dict(log_growth=out.log_growth[:, 0],
                  log_state_norm=out.log_state_norm,
                  overflow_step=out.overflow_step)
    if method == "vjp":
      out = jacobian._vjp_core(f, vec0, xs, probe, length, homogeneous,
                               precision, False)
      return dict(log_growth=out.log_growth[::-1],
                  log_state_norm=out.log_state_norm,
                  overflow_step=out.overflow_step)
    out = jacobian._lyapunov_core(f, vec0, xs, probe, length, k,
                                  homogeneous, precision)
    return dict(log_growth=out.cumulative[:, 0],
                log_state_norm=out.log_state_norm,
                overflow_step=out.overflow_step, exponents=out.exponents)

  return jax.vmap(one_scale)(gs)


def _rnn_jvp(p0, gs, h0, xs, key, length, homogeneous, precision):
  """``jacobian._jvp_core`` for every scale of one RNN seed in one scan.

  The states and tangents of all ``n`` scales are the rows of one ``(2n,
  hidden)`` matrix, so a step is a single GEMM ``[H; V] @ W0^T`` (they share
  ``W0``; the scale multiplies after it, as in ``rnn.step``), and the input
  drive ``U x_t + b`` of all steps is one GEMM before the scan (``xs=None``
  for none: a zero input adds exactly nothing). Same arithmetic as the
  generic path, in a layout XLA runs 1.35-2.7x faster on CPU (the levers
  table of ``benchmarks/RESULTS.md``).
  """
  with jax.default_matmul_precision(precision):
    n, dtype = gs.shape[0], h0.dtype
    acc = jacobian.acc_dtype(dtype)
    g = gs[:, None]
    v0 = jacobian._probe(key, h0.size, 1, dtype)[:, 0]
    drive = None if xs is None else xs @ p0.U.T + p0.b
    phi = activations.activation(p0.activation).fn
    renormalize = jax.vmap(jacobian._renormalize_state, (0, None, 0))

    def body(carry, d):
      h, v, scale, total, comp = carry
      A = jnp.concatenate([h, v]) @ p0.W0.T
      a = g * A[:n] + (p0.b if d is None else d)
      h, slope = jax.jvp(phi, (a,), (jnp.ones_like(a),))
      h, scale, lh = renormalize(h.astype(dtype), homogeneous, scale)
      v, lg = jacobian.normalize((slope * (g * A[n:])).astype(dtype),
                                axis=1)
      total, comp = jacobian.kahan_add(total, comp, lg)
      return (h, v, scale, total, comp), (total, lh)

    zeros = jnp.zeros(n, acc)
    init = (jnp.broadcast_to(h0, (n, h0.size)),
            jnp.broadcast_to(v0, (n, h0.size)), (zeros, zeros), zeros, zeros)
    # No unroll here: one GEMM per step already amortises the loop, and
    # unroll=4 measured 0.25 s more compile and no faster (benchmarks/).
    _, (lg, lh) = jax.lax.scan(body, init, drive, length=length)
    step = jacobian.overflow_index(lh)
    return dict(log_growth=jacobian._mask_after(lg, step).T,
                log_state_norm=lh.T, overflow_step=step)


def _homogeneous(model, activation, bias_scale, input_kind, kw):
  """Positively homogeneous of degree one: the state can be renormalised."""
  if activation not in ("relu", "linear") or bias_scale != 0:
    return False
  if model == "rnn":
    return input_kind in ("none", "zeros")
  return model == "mlp" and not kw["batchnorm"]


# ------------------------------------------------------------ host side


def _device_put(chunk, devices):
  mesh = Mesh(np.array(devices), ("grid",))
  sharding = NamedSharding(mesh, P("grid"))
  return jax.make_array_from_callback(chunk.shape, sharding,
                                      lambda idx: chunk[idx])


def _to_numpy(x):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def _key_data(key):
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key))
  elif not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
  return jax.random.key_data(key)


def _key_list(key):
  if isinstance(key, (int, np.integer)):
    return int(key)
  return np.asarray(_key_data(key)).tolist()


def _hash(*parts) -> str:
  h = hashlib.sha256()
  for p in parts:
    if isinstance(p, np.ndarray):
      h.update(str(p.dtype).encode() + str(p.shape).encode())
      h.update(np.ascontiguousarray(p).tobytes())
    else:
      h.update(json.dumps(p, sort_keys=True).encode())
  return h.hexdigest()


def _chunk_path(cache_dir, spec, chunk):
  if cache_dir is None:
    return None
  return os.path.join(os.fspath(cache_dir),
                      f"{spec.static[0]}-{_hash(spec.hash_config, chunk)[:32]}"
                      ".npz")


def _read_chunk(path):
  """A cached chunk, or None if absent, truncated, corrupt or foreign."""
  if path is None or not os.path.exists(path):
    return None
  try:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
      part = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
    return None
  want = os.path.basename(path).split("-", 1)[1][:32]
  if str(part.pop("chunk_hash", ""))[:32] != want:
    return None
  return part


def _to_map(spec, out):
  config = dict(spec.config)
  from exploding import __version__
  config.update(version=__version__, jax_version=jax.__version__,
                backend=jax.default_backend(),
                device_count=len(_devices(spec)))
  # The program's layout is (seeds, scales, ...); maps put seeds last.
  return GradientMap(
      log_growth=np.transpose(out["log_growth"], (1, 2, 0)),
      log_state_norm=np.transpose(out["log_state_norm"], (1, 2, 0)),
      overflow_step=np.transpose(out["overflow_step"], (1, 0)),
      weight_scales=spec.weight_scales.copy(),
      steps=np.arange(1, spec.static[2] + 1),
      config=config,
      exponents=(np.transpose(out["exponents"], (1, 2, 0))
                 if "exponents" in out else None))
