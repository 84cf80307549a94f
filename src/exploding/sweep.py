"""Sweeps: growth maps of any Model over a grid of knobs x steps x seeds.

A grid maps knob names (top-level scalar leaves of the model's params:
``weight_scale``, ``bias_scale``, ``forget_bias``, or a user's own) to 1-D
values; its points are their Cartesian product. For each seed the params
(unit draws), the initial state and the probe are drawn once from
``fold_in(key, seed)``, in a small program of their own, and every grid
point shares them: a point is the seed's params with its knob values set.
Knobs multiply after the matmul (``g * (W0 @ h)``), so ``vmap`` over the
points turns their matvecs into one GEMM per step, and the engine's single
``lax.scan`` yields every prefix length 1..T at once: one compilation per
configuration, none per grid value or params value. Forward sweeps (jvp,
Lyapunov) of models whose params and inputs do not depend on the length run
the scan in blocks of ``_BLOCK`` steps from a carried state: an init and a
block program serve every length (an MLP's depth, vjp sweeps and Gaussian
inputs still compile per length).

The points are split into chunks (bounded memory, one file each in the
cache, a unit of resumption) and each chunk is sharded over every visible
device with ``shard_map`` on a 1-D mesh, padded to a multiple of the device
count. Each point's arithmetic is the same wherever it runs; GEMM blocking
depends on the per-device batch, so maps agree to float32 rounding across
device counts and chunk sizes (exactly where the dynamics contract; only
statistically in the chaotic regime, where rounding differences grow).

On a multi-core CPU, expose one XLA host device per core before jax starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` (the CLI and
the figure runner do this when XLA_FLAGS is unset).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import tqdm.auto as tqdm

from exploding import _core, _validation, jacobian
from exploding.maps import GradientMap, save_npz_atomic
from exploding.models import Model, lstm, mlp, rnn

__all__ = ["sweep", "MODELS", "METHODS"]

MODELS = ("rnn", "lstm", "mlp")
METHODS = ("jvp", "vjp", "lyapunov")
_MEMORY_BUDGET = 1 << 30   # bytes per chunk, for the default chunk_size
_UNROLL = 4   # generic path's lax.scan unroll: 1.2-1.3x faster on XLA CPU
_BLOCK = 256  # steps per call of a blocked sweep (no program per length)
_KNOB_RANGES = {"weight_scale": "positive", "bias_scale": "nonnegative"}


def sweep(model: Model | str, *, grid: dict[str, Any] | None = None,
          length: int, seeds: int = 8, method: str = "jvp", key: Any = 0,
          inputs: Any = None, dtype: Any = None, state0: Any = None,
          k: int = 1, chunk_size: int | None = None,
          cache_dir: str | os.PathLike | None = None, progress: bool = True,
          precision: str = "highest", weight_scales: Any = None,
          **settings) -> GradientMap:
  """Measures Jacobian-product growth over a grid of knobs and seeds.

  Args:
    model: a ``Model``, or ``"rnn"``/``"lstm"``/``"mlp"`` with the built-in
      model's settings as keywords (``hidden``, ``activation``, ``init``,
      ``input_size``, ``bias_scale``; ``forget_bias`` for ``"lstm"``;
      ``width``, ``batch``, ``batchnorm``, ``residual`` for ``"mlp"``,
      whose depth is ``length``).
    grid: knob name -> 1-D values, e.g. ``{"weight_scale": gs,
      "bias_scale": bs}``; the map has one axis per name, in this order.
    length: T, steps (layers for an MLP), >= 1.
    seeds: number of seeds, >= 1; seed s draws from ``fold_in(key, s)``.
    method: ``"jvp"`` (forward, all prefixes), ``"vjp"`` (backprop, all
      lags) or ``"lyapunov"`` (``k`` exponents by QR).
    key: int seed or PRNG key.
    inputs: ``None`` (the model's own: none, or an MLP's layers),
      ``"gaussian"`` (i.i.d. ``N(0, 1)`` per step and seed, of the model's
      ``input_shape``) or an array with leading axis ``length`` shared by
      all seeds. Given inputs turn homogeneous renormalisation off.
    dtype: computation dtype (``None``: default float); params, states and
      inputs are cast to it.
    state0: an initial state shared by all seeds (default: the model's
      ``state0``, drawn per seed).
    k: number of Lyapunov exponents.
    chunk_size: grid points x seeds per compiled call; the default keeps a
      chunk's working set near 1 GiB.
    cache_dir: store each finished chunk there (atomic writes, keyed by the
      configuration and the package's source); a rerun reuses them, so an
      interrupted sweep resumes.
    progress: a tqdm bar over chunks (shown on a terminal).
    precision: matmul precision inside the engine.
    weight_scales: shorthand for ``grid={"weight_scale": weight_scales}``.
    **settings: the built-in model's settings (string ``model`` only).

  Returns:
    A ``GradientMap``: ``log_growth`` ``(*grid_shape, length, seeds)``,
    ``axes`` name -> values.

  Example:
    >>> import exploding as ex
    >>> m = ex.sweep("rnn", weight_scales=[0.5, 1.0, 2.0], length=64,
    ...              seeds=2, hidden=32, progress=False)
    >>> m.log_growth.shape
    (3, 64, 2)
  """
  spec = _Spec.make(model, grid, weight_scales, length, seeds, method, key,
                    inputs, dtype, state0, k, precision, settings)
  devices = tuple(_devices(spec))
  per_chunk = _points_per_chunk(spec, chunk_size, len(devices))
  points = spec.points
  n_points = len(next(iter(points.values())))
  n_chunks = math.ceil(n_points / per_chunk)
  pad = n_chunks * per_chunk - n_points
  padded = {k: np.concatenate([v, np.full(pad, v[-1])])
            for k, v in points.items()}
  if cache_dir is not None:
    cache_dir = _validation.check_writable_dir("cache_dir", cache_dir)
  programs = {stage: _scan_program(spec.model, spec.static, devices,
                                   _compiler_options(), stage)
              for stage in (("init", "block") if spec.blocked else
                            ("whole",))}
  draws = None
  parts = []
  for c in tqdm.trange(n_chunks, desc=f"sweep {spec.model.name}",
                       unit="chunk", disable=None if progress else True,
                       leave=False):
    chunk = {k: v[c * per_chunk:(c + 1) * per_chunk]
             for k, v in padded.items()}
    path = _chunk_path(cache_dir, spec, chunk)
    part = _read_chunk(path, spec, per_chunk)
    if part is None:
      if draws is None:
        draws = _draws(spec, devices)
      knobs = {k: _device_put(v.astype(spec.dtype), devices)
               for k, v in chunk.items()}
      if spec.blocked:
        part = _run_blocks(spec, programs, draws, knobs)
      else:
        part = programs["whole"](draws, knobs, spec.state0, spec.xs)
        part = {k: _to_numpy(v) for k, v in part.items()}
      if path is not None:
        save_npz_atomic(path, {**part, "chunk_hash": np.array(
            _hash(spec.hash_config, *_chunk_arrays(chunk)))})
    parts.append(part)
  out = {k: np.concatenate([p[k] for p in parts], axis=1)[:, :n_points]
         for k in parts[0]}
  return _to_map(spec, out, len(devices))


# ------------------------------------------------------------ the spec


class _Spec:
  """A validated sweep configuration."""

  @staticmethod
  def make(model, grid, weight_scales, length, seeds, method, key, inputs,
           dtype, state0, k, precision, settings):
    s = _Spec()
    _validation.check_choice("method", method, METHODS)
    jacobian.check_precision(precision)
    s.length = _validation.check_int("length", length, 1)
    s.seeds = _validation.check_int("seeds", seeds, 1)
    s.k = _validation.check_int("k", k, 1)
    s.dtype = _validation.float_dtype(dtype)
    if s.dtype == jnp.float64 and not jax.config.jax_enable_x64:
      raise ValueError("dtype float64 needs jax_enable_x64 (e.g. "
                       "jax.config.update('jax_enable_x64', True)); without "
                       "it jax computes in float32")
    s.method, s.key = method, jacobian.as_key(key)
    s.model = _builtin(model, settings, s.length, s.dtype)
    s.p_shape, s0_shape = _shapes(s.model)
    p_shape = s.p_shape
    s.axes = _grid(grid, weight_scales, p_shape, s.dtype)
    mesh = np.meshgrid(*s.axes.values(), indexing="ij")
    s.points = {k: m.ravel() for k, m in zip(s.axes, mesh)}
    s.state0 = None if state0 is None else jax.tree.map(
        lambda a: jnp.asarray(a, s.dtype), state0)
    _validation.check_finite("state0", s.state0)
    if s.state0 is not None and (
        jax.tree.structure(s.state0) != jax.tree.structure(s0_shape) or
        [a.shape for a in jax.tree.leaves(s.state0)] !=
        [a.shape for a in jax.tree.leaves(s0_shape)]):
      raise ValueError("state0 must have the model's state structure and "
                       f"shapes {jax.tree.map(lambda a: a.shape, s0_shape)}, "
                       f"got {jax.tree.map(jnp.shape, s.state0)}")
    s.state_size = sum(int(np.prod(a.shape, dtype=int))
                       for a in jax.tree.leaves(s0_shape))
    if method == "lyapunov" and s.k > s.state_size:
      raise ValueError(f"k must be <= the state size {s.state_size}, got "
                       f"{s.k}")
    s.xs, s.input_kind = _inputs(s.model, inputs, s.length, s.dtype)
    fused = s.model.advance is not None and method in ("jvp", "lyapunov")
    # Forward sweeps of length-free models run in blocks of _BLOCK steps
    # carried from call to call: one program for every length.
    s.blocked = method in ("jvp", "lyapunov") and s.input_kind in ("none",
                                                                   "array")
    s.static = (_BLOCK if s.blocked else s.length, s.seeds, method, s.k, precision, str(s.dtype),
                s.input_kind, s.state0 is not None, tuple(s.axes), fused)
    s.config = dict(s.model.settings, model=s.model.name, method=method,
                    length=s.length, seeds=s.seeds, dtype=str(s.dtype),
                    k=s.k, precision=precision, inputs=s.input_kind,
                    key=np.asarray(jax.random.key_data(s.key)).tolist(),
                    grid={k: v.tolist() for k, v in s.axes.items()})
    if s.state0 is not None:
      s.config["state0_sha"] = _hash(*map(np.asarray,
                                          jax.tree.leaves(s.state0)))
    if s.input_kind == "array":
      s.config["inputs_sha"] = _hash(*map(np.asarray, jax.tree.leaves(s.xs)))
    _check_size(s)
    return s

  @functools.cached_property
  def hash_config(self):
    """The cache key's config: ``config`` without the grid, with the
    source fingerprint (computed only for a sweep with a cache)."""
    out = {**self.config, "source": _source_fingerprint(self.model)}
    out.pop("grid")
    return out


def _builtin(model, settings, length, dtype):
  """A Model, or the built-in one named by ``model`` with ``settings``."""
  if isinstance(model, Model):
    if settings:
      raise TypeError(f"settings {sorted(settings)} apply to the built-in "
                      "models only; a Model carries its own")
    return model
  _validation.check_choice("model", model, MODELS)
  kw = dict(settings)
  if model == "mlp":
    width = kw.pop("width", kw.pop("hidden", 128))
    allowed = ("batch", "activation", "init", "batchnorm", "residual",
               "bias_scale")
  else:
    width = kw.pop("hidden", 128)
    allowed = ("activation", "init", "input_size", "bias_scale")
    if model == "lstm":
      allowed = ("init", "input_size", "bias_scale", "forget_bias")
  unknown = sorted(set(kw) - set(allowed))
  if unknown:
    raise TypeError(f"unknown settings for model {model!r}: {unknown}; "
                    f"allowed {sorted(allowed + ('hidden',))}")
  if "bias_scale" in kw:
    _validation.check_nonnegative("bias_scale", kw["bias_scale"])
    kw["bias_scale"] = float(kw["bias_scale"])
  if "forget_bias" in kw:
    _validation.check_finite("forget_bias", np.asarray(kw["forget_bias"],
                                                       float))
    kw["forget_bias"] = float(kw["forget_bias"])
  if model == "mlp":
    return mlp.model(width, length, dtype=dtype, **kw)
  return {"rnn": rnn.model, "lstm": lstm.model}[model](width, dtype=dtype,
                                                       **kw)


def _grid(grid, weight_scales, p_shape, dtype):
  """name -> 1-D float64 values, checked against the params' knobs."""
  shorthand = weight_scales is not None
  if shorthand:
    if grid is not None:
      raise TypeError("give grid or weight_scales, not both")
    grid = {"weight_scale": weight_scales}
  if not isinstance(grid, dict) or not grid:
    raise ValueError("grid must be a non-empty dict knob name -> 1-D values "
                     "(or give weight_scales=)")
  knobs = _core.knob_leaves(p_shape)
  axes = {}
  for name, values in grid.items():
    label = "weight_scales" if shorthand else f"grid[{name!r}]"
    if name not in knobs:
      raise ValueError(f"grid knob {name!r} is not a scalar float leaf of "
                       f"the model's params; knobs: {sorted(knobs)}")
    v = np.asarray(values)
    if v.dtype.kind not in "fiu" or v.dtype == bool:
      raise TypeError(f"{label} must be real numbers, got {v.dtype}")
    v = np.atleast_1d(v.astype(np.float64))
    if v.ndim != 1 or v.size < 1:
      raise ValueError(f"{label} must be a non-empty 1-D sequence")
    rule = _KNOB_RANGES.get(name)
    if rule == "positive":
      _validation.check_positive(label, v)
    elif rule == "nonnegative":
      _validation.check_nonnegative(label, v)
    else:
      _validation.check_finite(label, v)
    with np.errstate(over="ignore", under="ignore"):
      cast = v.astype(dtype)
    if not np.all(np.isfinite(cast)) or np.any((cast == 0) & (v != 0)):
      raise ValueError(f"{label} has values not representable in "
                       f"{dtype} (overflow to inf or underflow to 0): "
                       f"{v[~np.isfinite(cast) | ((cast == 0) & (v != 0))]}")
    axes[name] = v
  return axes


def _inputs(model, inputs, length, dtype):
  """``(shared xs or None, kind)``; kind is none/model/gaussian/array."""
  if inputs is None:
    return None, "none" if model.inputs is None else "model"
  if isinstance(inputs, str):
    _validation.check_choice("inputs", inputs, ("gaussian",))
    if model.input_shape is None:
      raise ValueError("inputs='gaussian' needs a model that takes inputs "
                       "(input_size >= 1, or Model.input_shape)")
    return None, "gaussian"
  xs = jax.tree.map(lambda a: jnp.asarray(a, dtype), inputs)
  for leaf in jax.tree.leaves(xs):
    want = (length,) + (tuple(model.input_shape) if model.input_shape
                        else leaf.shape[1:])
    if leaf.shape != want:
      raise ValueError(f"inputs must have shape (length, *input_shape) = "
                       f"{want}, got {leaf.shape}")
  _validation.check_finite("inputs", xs)
  return xs, "array"


@functools.lru_cache(maxsize=64)
def _shapes(model):
  """Shapes of the model's params and state (traced once per model)."""
  return (jax.eval_shape(model.init, jax.random.key(0)),
          jax.eval_shape(model.state0, jax.random.key(0)))


def _source_fingerprint(model):
  """What the cache key knows of the code: the package's source files and
  the model's functions (their source where inspect finds it)."""
  parts = [_package_source_hash()]
  for fn in (model.init, model.step, model.state0, model.homogeneous,
             model.inputs, model.advance):
    fn = getattr(fn, "func", fn)
    try:
      parts.append(inspect.getsource(fn))
    except (TypeError, OSError):
      parts.append(repr(fn) if not callable(fn) else
                   getattr(fn, "__qualname__", type(fn).__name__))
  return _hash(*parts)


@functools.lru_cache(maxsize=1)
def _package_source_hash():
  root = os.path.dirname(os.path.abspath(__file__))
  h = hashlib.sha256()
  for folder, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for name in sorted(files):
      if name.endswith(".py"):
        with open(os.path.join(folder, name), "rb") as fh:
          h.update(name.encode() + fh.read())
  return h.hexdigest()


def _check_size(s):
  """Refuses a map that cannot fit in host memory, before any work."""
  n_points = math.prod(len(v) for v in s.axes.values())
  need = 4 * n_points * s.seeds * (s.length * 2 + 1 + s.k)
  draws = s.seeds * sum(a.size * a.dtype.itemsize
                        for a in jax.tree.leaves(s.p_shape))
  try:
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return
  if need > 0.8 * have:
    raise MemoryError(
        f"the map needs {need / 2**30:.1f} GiB of host memory "
        f"({n_points} grid points x {s.length} steps x {s.seeds} seeds), "
        f"this machine has {have / 2**30:.1f} GiB: use fewer points, steps "
        "or seeds, or split the grid over several sweeps with cache_dir")
  if draws > 0.8 * have:
    raise MemoryError(
        f"the seeds' parameters need {draws / 2**30:.1f} GiB ({s.seeds} "
        f"seeds x {draws / s.seeds / 2**20:.1f} MiB), this machine has "
        f"{have / 2**30:.1f} GiB: use a smaller model or fewer seeds")


# ------------------------------------------------------------- the program


def _points_per_chunk(spec, chunk_size, n_dev):
  n_points = len(next(iter(spec.points.values())))
  if chunk_size is None:
    T, n = spec.length, spec.state_size
    per_point = 8 * T * 3 + 4 * n * 8
    if spec.method == "vjp":
      per_point += 4 * T * n * 3
    if spec.method == "lyapunov":
      per_point += 4 * n * spec.k * 6
    chunk_size = max(1, _MEMORY_BUDGET // per_point)
  chunk_size = _validation.check_int("chunk_size", chunk_size, 1)
  per = min(max(1, chunk_size // spec.seeds), n_points)
  return math.ceil(per / n_dev) * n_dev


def _devices(spec):
  """Every device (Lyapunov sweeps too: see ``_core._batched_qr`` for the
  XLA CPU deadlock this once needed one device for)."""
  del spec
  return jax.devices()


def _compiler_options():
  """XLA CPU at backend optimisation level 1: compiles the sweep's programs
  about 2x faster at the same run time (``benchmarks/``); other backends
  keep their defaults."""
  if jax.default_backend() == "cpu":
    return (("xla_backend_optimization_level", 1),)
  return ()


def _draws(spec, devices):
  """Every seed's draws, computed on one device (QR-based initialisers hang
  XLA CPU across host devices), then replicated on the mesh."""
  program = _draw_program(spec.model, _draw_static(spec), _compiler_options())
  local = [d for d in devices if d.process_index == jax.process_index()]
  sharding = NamedSharding(Mesh(np.array(devices), ("grid",)), P())
  with jax.default_device(local[0]):
    draws = program(jax.random.key_data(spec.key))
  if jax.process_count() == 1:
    return jax.device_put(draws, sharding)
  # Every process drew the same numbers; each places its own copies (a
  # cross-process device_put of a single-device array is not allowed).
  draws = jax.tree.map(np.asarray, draws)
  return jax.tree.map(lambda a: jax.make_array_from_callback(
      a.shape, sharding, lambda idx: a[idx]), draws)


def _draw_static(spec):
  kind = spec.input_kind
  n_probe = spec.k if spec.method == "lyapunov" else 1
  return (spec.seeds, str(spec.dtype), spec.state_size, n_probe, kind,
          spec.length if kind == "gaussian" else None,
          spec.state0 is not None)


@functools.lru_cache(maxsize=64)
def _draw_program(model, static, options):
  """Draws every seed's params, state, probe and inputs: a program apart
  from the scan, so the scan holds no RNG (threefry is most of XLA CPU's
  compile time) and sweeps differing only in length or method share it."""
  seeds, dtype, size, n_probe, kind, length, has_state0 = static

  def draw_seed(key):
    k_init, k_state, k_probe, k_in = jax.random.split(key, 4)
    out = dict(params=_cast(model.init(k_init), dtype),
               probe=jacobian.probe_normals(k_probe, size, n_probe))
    if not has_state0:
      out["state0"] = _cast(model.state0(k_state), dtype)
    if kind == "gaussian":
      out["xs"] = jax.random.normal(
          k_in, (length,) + tuple(model.input_shape),
          jnp.float32).astype(dtype)
    if kind == "model":
      out["k_in"] = jax.random.key_data(k_in)
    return out

  def draw(base_key):
    base = jax.random.wrap_key_data(base_key)
    keys = jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(seeds))
    return jax.vmap(draw_seed)(keys)

  return jax.jit(draw, compiler_options=dict(options) or None)


def _cast(tree, dtype):
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(
      a.dtype, jnp.floating) else a, tree)


@functools.lru_cache(maxsize=64)
def _scan_program(model, static, devices, options, stage="whole"):
  """One jitted, sharded program per model, static configuration and stage:
  ``"whole"`` runs the sweep of a chunk; a blocked sweep runs ``"init"``
  (the carry before step 1) then ``"block"`` (``_BLOCK`` steps from a
  carry) as often as its length needs."""
  mesh = Mesh(np.array(devices), ("grid",))

  def local(draws, knobs, state0, xs, carry=None):
    return _chunk(model, static, draws, knobs, state0, xs, stage, carry)

  specs = {"whole": ((P(), P("grid"), P(), P()), P(None, "grid")),
           "init": ((P(), P("grid"), P(), P()), P("grid")),
           "block": ((P(), P("grid"), P(), P(), P("grid")),
                     (P(None, None, "grid"), P("grid")))}[stage]
  sharded = jax.shard_map(local, mesh=mesh, in_specs=specs[0],
                          out_specs=specs[1], check_vma=False)
  return jax.jit(sharded, compiler_options=dict(options) or None)


def _run_blocks(spec, programs, draws, knobs):
  """A blocked chunk: the carry from ``init``, then ``_BLOCK`` steps at a
  time (the last block's steps past ``length`` are dropped), finished on
  the host."""
  carry = programs["init"](draws, knobs, spec.state0, None)
  raws = []
  for b in range(math.ceil(spec.length / _BLOCK)):
    xs = None if spec.xs is None else jax.tree.map(
        lambda a: _pad_steps(a[b * _BLOCK:(b + 1) * _BLOCK]), spec.xs)
    raw, carry = programs["block"](draws, knobs, spec.state0, xs, carry)
    raws.append(raw)            # on device: every block dispatched at once
  raw = {k: np.concatenate([_to_numpy(r[k]) for r in raws])[:spec.length]
         for k in raws[0]}
  return _finish(spec, raw)


def _pad_steps(a):
  return jnp.concatenate([a, jnp.zeros((_BLOCK - len(a),) + a.shape[1:],
                                       a.dtype)]) if len(a) < _BLOCK else a


def _finish(spec, raw):
  """What ``_core.propagate`` (``overflow_index``, ``mask_after``) and
  ``jacobian.order_spectrum`` do after the scan, in numpy on the host: the
  same arithmetic eagerly in jnp would compile its small ops again for every
  length. ``raw``: ``(T, seeds, n, ...)``; returns ``(seeds, n, ...)``."""
  lsn, lg = raw["log_state_norm"], raw["log_growth"]
  bad = ~(lsn < np.inf)
  overflow = np.where(bad.any(0), bad.argmax(0), -1).astype(np.int32)
  t = np.arange(len(lsn)).reshape((-1, 1, 1, 1))
  lg = np.where((overflow[None, ..., None] >= 0)
                & (t >= overflow[None, ..., None]), np.nan, lg)
  out = dict(log_state_norm=np.moveaxis(lsn, 0, -1), overflow_step=overflow)
  if spec.method == "lyapunov":
    order = np.argsort(-np.nan_to_num(lg[-1], nan=-np.inf), axis=-1,
                       kind="stable")
    lg = np.take_along_axis(lg, order[None], axis=-1)
    out["exponents"] = lg[-1] / np.asarray(spec.length, lg.dtype)
  out["log_growth"] = np.moveaxis(lg[..., 0], 0, -1)
  return out


def _chunk(model, static, draws, knobs, state0, xs, stage="whole",
           carry=None):
  """Every point of a chunk for every seed, as one batch of ``seeds * n``
  rows through the core (so its per-step checks see the whole batch and
  branch for real); returns dict of ``(seeds, n, ...)`` arrays."""
  (length, seeds, method, k, precision, dtype, input_kind, _, _,
   fused) = static
  params = draws["params"]
  n = len(next(iter(knobs.values())))
  rows = seeds * n
  if state0 is None:
    state0 = jax.tree.map(lambda a: a[0], draws["state0"])
    H = jax.vmap(lambda s: _core.Flat.of(model.step, state0).ravel(s))(
        draws["state0"])
  else:
    H = _core.Flat.of(model.step, state0).ravel(state0)[None].repeat(seeds, 0)
  flat = _core.Flat.of(model.step, state0)
  H = jnp.broadcast_to(H[:, None], (seeds, n, flat.size)).reshape(rows, -1)
  x_axis = None
  if input_kind == "gaussian":
    xs, x_axis = jnp.swapaxes(draws["xs"], 0, 1), 0        # (T, seeds, ...)
  elif input_kind == "model":
    xs = jax.vmap(lambda p, kd: model.inputs(
        p, jax.random.wrap_key_data(kd), length))(params, draws["k_in"])
    xs, x_axis = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), xs), 0
  hom = model.homogeneous if input_kind in ("none", "model") else False
  if callable(hom):
    hom = jax.vmap(lambda p: jax.vmap(lambda kv: jnp.asarray(
        hom(_core.set_knobs(p, kv)), bool))(knobs))(params).reshape(rows)

  def per_seed_advance(make):
    """An advance over all rows from a per-seed one, ``make(params)``."""
    def advance(H, V, x):
      split = lambda a: None if a is None else a.reshape(
          (seeds, n) + a.shape[1:])
      H, V = jax.vmap(lambda p, H, V, x: make(p)(H, V, x),
                      (0, 0, None if V is None else 0, x_axis))(
                          params, split(H), split(V), x)
      merge = lambda a: None if a is None else a.reshape(
          (rows,) + a.shape[2:])
      return merge(H), merge(V)
    return advance

  if fused:
    advance = per_seed_advance(
        lambda p: functools.partial(model.advance, p, knobs))
  else:
    advance = per_seed_advance(
        lambda p: _core.linearized_advance(flat, p, knobs))
  unroll = 1 if fused else _UNROLL
  tile = lambda a: jnp.broadcast_to(a[:, None], (seeds, n) + a.shape[1:]
                                    ).reshape((rows,) + a.shape[1:])
  with jax.default_matmul_precision(precision):
    if stage != "whole":
      tangent = "norm" if method == "jvp" else "qr"
      if stage == "init":
        V = tile(_core.unit_probes(draws["probe"], flat.dtype)
                 if method == "jvp" else jax.vmap(
                     lambda q: jacobian.initial_frame(q, flat.dtype))(
                         draws["probe"]))
        return _core.initial_carry(H, V, tangent)
      raw, carry = _core.propagate(advance, None, None, xs, length=length,
                                   homogeneous=hom, tangent=tangent,
                                   unroll=unroll, carry=carry,
                                   finalize=False)
      split = lambda a: a.reshape((a.shape[0], seeds, n) + a.shape[2:])
      return {k: split(raw[k]) for k in ("log_growth", "log_state_norm")
              }, carry
    if method == "jvp":
      V = tile(_core.unit_probes(draws["probe"], flat.dtype))
      out = _core.propagate(advance, H, V, xs, length=length,
                            homogeneous=hom, unroll=unroll)
      lg = out["log_growth"][..., 0]
    elif method == "vjp":
      fwd = _core.propagate(advance, H, None, xs, length=length,
                            homogeneous=hom, keep_states=True, unroll=unroll)
      U = tile(_core.unit_probes(draws["probe"], flat.dtype))
      pull = per_seed_advance(
          lambda p: _pull_rows(_core.pullback_advance(flat, p, knobs)))
      x_all = (fwd["states"], xs)
      bwd = _core.propagate(
          lambda _, U, hx: (None, pull(hx[0], U, hx[1])[1]), None, U,
          x_all,
          length=length, homogeneous=False, reverse=True, unroll=unroll)
      out = fwd
      lg = jnp.where(fwd["overflow_step"] >= 0, jnp.nan,
                     bwd["log_growth"][::-1, :, 0])
    else:
      Q = tile(jax.vmap(lambda q: jacobian.initial_frame(q, flat.dtype))(
          draws["probe"]))
      out = _core.propagate(advance, H, Q, xs, length=length,
                            homogeneous=hom, tangent="qr")
      exponents, cum = jacobian.order_spectrum(out["log_growth"], length)
      lg = cum[..., 0]
  per_seed = lambda a: a.reshape((seeds, n) + a.shape[1:])
  result = dict(log_growth=per_seed(lg.T),
                log_state_norm=per_seed(out["log_state_norm"].T),
                overflow_step=per_seed(out["overflow_step"]))
  if method == "lyapunov":
    result["exponents"] = per_seed(exponents)
  return result


def _pull_rows(pullback):
  """A core pull-back as ``(states, U, x) -> (states, U J)``, the shape
  ``per_seed_advance`` vmaps."""
  def advance(H, U, x):
    return H, pullback(None, U, (H, x))[1]
  return advance


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


def _hash(*parts) -> str:
  h = hashlib.sha256()
  for p in parts:
    if isinstance(p, np.ndarray):
      h.update(str(p.dtype).encode() + str(p.shape).encode())
      h.update(np.ascontiguousarray(p).tobytes())
    else:
      h.update(json.dumps(p, sort_keys=True).encode())
  return h.hexdigest()


def _chunk_arrays(chunk):
  return [np.asarray(v, np.float64) for _, v in sorted(chunk.items())]


def _chunk_path(cache_dir, spec, chunk):
  if cache_dir is None:
    return None
  digest = _hash(spec.hash_config, *_chunk_arrays(chunk))
  return os.path.join(cache_dir, f"{spec.model.name}-{digest[:32]}.npz")


def _read_chunk(path, spec, per_chunk):
  """A cached chunk, or None if absent, truncated, corrupt, foreign or of
  the wrong shape (it is then recomputed)."""
  if path is None or not os.path.isfile(path):
    return None
  try:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
      if not hasattr(f, "files"):
        return None
      part = {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
    return None
  want = os.path.basename(path).rsplit("-", 1)[1][:32]
  if str(part.pop("chunk_hash", ""))[:32] != want:
    return None
  shapes = {"log_growth": (spec.seeds, per_chunk, spec.length),
            "log_state_norm": (spec.seeds, per_chunk, spec.length),
            "overflow_step": (spec.seeds, per_chunk)}
  if spec.method == "lyapunov":
    shapes["exponents"] = (spec.seeds, per_chunk, spec.k)
  if set(part) != set(shapes) or any(part[k].shape != v
                                     for k, v in shapes.items()):
    return None
  return part


def _to_map(spec, out, n_devices):
  config = dict(spec.config)
  from exploding import __version__
  config.update(version=__version__, jax_version=jax.__version__,
                backend=jax.default_backend(), device_count=n_devices)
  grid_shape = tuple(len(v) for v in spec.axes.values())

  def seeds_last(a):   # the program's layout is (seeds, points, ...)
    a = np.moveaxis(a, 0, -1)
    return a.reshape(grid_shape + a.shape[1:])

  return GradientMap(
      log_growth=seeds_last(out["log_growth"]),
      log_state_norm=seeds_last(out["log_state_norm"]),
      overflow_step=seeds_last(out["overflow_step"]),
      axes={k: v.copy() for k, v in spec.axes.items()},
      steps=np.arange(1, spec.length + 1), config=config,
      exponents=(seeds_last(out["exponents"]) if "exponents" in out
                 else None))
