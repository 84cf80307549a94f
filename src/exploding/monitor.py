"""Gradient monitoring for any training loop, as optax transformations.

``monitor`` goes first in an ``optax.chain`` and passes the updates (there:
the gradient) through unchanged. Every step it records in its state

* the global log norm ``log ||g||`` and each leaf's ``log ||g_i||``, in log
  space and scaled, so they neither overflow nor underflow: ``log ||g|| =
  (1/2) log sum_i exp(2 log ||g_i||)``. A gradient of norm ``1e50`` reads
  115.1 and an all-zero one ``-inf``, never ``inf`` or a silent 0; a leaf
  with an ``inf`` or ``NaN`` entry reads NaN;
* the fraction of each leaf's entries that are exactly zero (float16
  gradients underflow to zero: Micikevicius et al. 2018, Section 3.2),
  ``inf``, or ``NaN``. XLA on CPU treats float32 subnormals as zero, so
  there they count as zeros (they are underflow too);
* with ``clip_norm=c``, the clip ratio ``min(1, c / ||g||)``: the factor by
  which a global-norm clipper with threshold ``c`` chained after it
  (``optax.clip_by_global_norm(c)``, ``ex.clipping.clipper("norm", c)``;
  Pascanu et al. 2013, Algorithm 1) scales the step.

The records fill a ring buffer of the last ``history`` steps in the
optimiser state; nothing leaves the device during the step, and
``monitor_history(state)`` reads the buffer out as numpy arrays. A
``callback`` (e.g. ``wandb.log``) gets each step's summary through
``jax.debug.callback``, and only when one is given.

``skip_if_log_norm_jumps(inner, k)`` wraps an optimiser as
``optax.apply_if_finite`` does: a step whose gradient log norm exceeds the
median of the last ``window`` accepted steps by more than ``k`` nats (the
norm jumped by more than ``e^k``) is skipped: the update is zero and the
inner optimiser's state stays as it was (PaLM skipped the batches around its
loss spikes: Chowdhery et al. 2023, Section 5.1).

Example::

  tx = optax.chain(ex.monitor(history=1000), optax.adam(1e-3))
  ...                                   # train with tx
  h = ex.monitor_history(opt_state)     # h.log_norm: (n_steps,)
  ex.plot_monitor(h, vjp_map, scale=1.0)

References:
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML 2013, Algorithm 1.
  Micikevicius et al., "Mixed precision training", ICLR 2018, Section 3.2.
  Chowdhery et al., "PaLM: scaling language modeling with pathways", JMLR
  2023, Section 5.1.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from exploding import _core, _validation

__all__ = ["MonitorHistory", "MonitorState", "SkipState", "monitor",
           "monitor_history", "plot_monitor", "skip_if_log_norm_jumps"]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


@flax.struct.dataclass
class MonitorState:
  """The ring buffer of ``monitor``; row ``count % history`` is written next.

  Attributes:
    count: ``()`` int32, steps recorded so far.
    log_norm: ``(history,)`` global ``log ||g||``.
    leaf_log_norm: ``(history, n_leaves)`` per-leaf ``log ||g_i||``.
    zero_fraction: ``(history, n_leaves)`` fraction of exact zeros.
    inf_fraction: ``(history, n_leaves)`` fraction of ``+-inf``.
    nan_fraction: ``(history, n_leaves)`` fraction of ``NaN``.
    clip_ratio: ``(history,)`` ``min(1, clip_norm / ||g||)``, or ``None``.
    leaf_names: the leaves' paths (static, not arrays), e.g.
      ``"Dense_0/kernel"``, in ``jax.tree.leaves`` order.
  """

  count: jax.Array
  log_norm: jax.Array
  leaf_log_norm: jax.Array
  zero_fraction: jax.Array
  inf_fraction: jax.Array
  nan_fraction: jax.Array
  clip_ratio: jax.Array | None
  leaf_names: tuple[str, ...] = flax.struct.field(pytree_node=False,
                                                  default=())


class MonitorHistory(NamedTuple):
  """A monitor's records as numpy arrays, oldest step first (``n`` rows: the
  steps still in the ring buffer)."""

  step: np.ndarray            # (n,) 0-based index of the step recorded
  log_norm: np.ndarray        # (n,)
  leaf_log_norm: np.ndarray   # (n, n_leaves)
  zero_fraction: np.ndarray   # (n, n_leaves)
  inf_fraction: np.ndarray    # (n, n_leaves)
  nan_fraction: np.ndarray    # (n, n_leaves)
  clip_ratio: np.ndarray | None   # (n,)
  leaf_names: tuple[str, ...]


class SkipState(NamedTuple):
  """State of ``skip_if_log_norm_jumps``.

  Attributes:
    recent: ``(window,)`` log norms of the last accepted finite steps, NaN
      where not yet filled.
    accepted: ``()`` int32, finite log norms written into ``recent``.
    consecutive_skips: ``()`` int32, skips since the last accepted step.
    total_skips: ``()`` int32, steps skipped so far.
    last_skipped: ``()`` bool, whether the last step was skipped.
    inner_state: the wrapped optimiser's state.
  """

  recent: jax.Array
  accepted: jax.Array
  consecutive_skips: jax.Array
  total_skips: jax.Array
  last_skipped: jax.Array
  inner_state: Any


def monitor(history: int = 1, *, clip_norm: float | None = None,
            callback: Callable[[dict[str, Any]], Any] | None = None
            ) -> optax.GradientTransformation:
  """Records gradient statistics each step and passes updates unchanged.

  Args:
    history: how many of the latest steps the state keeps (a ring buffer;
      memory ``4 * history * (2 + 4 * n_leaves)`` bytes in float32).
    clip_norm: the threshold of a global-norm clipper chained after the
      monitor; records the clip ratio ``min(1, clip_norm / ||g||)``.
    callback: called on the host each step (through
      ``jax.debug.callback``) with a dict of Python numbers (numpy arrays
      under ``vmap``): ``"step"``, ``"log_norm"``, ``"clip_ratio"`` (with
      ``clip_norm``) and, per leaf, ``"log_norm/<leaf>"``,
      ``"zero_fraction/<leaf>"``, ``"inf_fraction/<leaf>"``,
      ``"nan_fraction/<leaf>"``; e.g. ``callback=wandb.log``. ``None``: no
      host callback in the step.

  Returns:
    An ``optax.GradientTransformation`` whose state is a ``MonitorState``.
    Put it first in the chain, outside any ``apply_if_finite`` or
    ``skip_if_log_norm_jumps``, to record every step, skipped ones too.
  """
  history = _validation.check_int("history", history, 1)
  if clip_norm is not None:
    _validation.check_positive("clip_norm", clip_norm)
    log_clip = float(np.log(clip_norm))
  if callback is not None and not callable(callback):
    raise TypeError(f"callback must be callable or None, got {callback!r}")

  def init(params):
    names, dtype = _leaf_names_and_dtype(params)
    n = len(names)
    full = lambda *shape: jnp.full((history, *shape), jnp.nan, dtype)
    return MonitorState(
        count=jnp.zeros((), jnp.int32), log_norm=full(),
        leaf_log_norm=full(n), zero_fraction=full(n), inf_fraction=full(n),
        nan_fraction=full(n),
        clip_ratio=None if clip_norm is None else full(), leaf_names=names)

  def update(updates, state, params=None):
    del params
    leaves = jax.tree.leaves(updates)
    if len(leaves) != len(state.leaf_names):
      raise ValueError(f"updates have {len(leaves)} leaves, the params the "
                       f"monitor was initialised with {len(state.leaf_names)}")
    dtype = state.log_norm.dtype
    leaf_log, zero, inf, nan = _tree_stats(leaves, dtype)
    log_norm = _combine(leaf_log)
    i = state.count % history
    ratio = clip_ratio = None
    if clip_norm is not None:
      ratio = jnp.exp(jnp.minimum(0, log_clip - log_norm))
      clip_ratio = state.clip_ratio.at[i].set(ratio)
    if callback is not None:
      jax.debug.callback(_HostCallback(callback, state.leaf_names),
                         state.count, log_norm, leaf_log, zero, inf, nan,
                         ratio)
    new = MonitorState(
        count=state.count + 1,
        log_norm=state.log_norm.at[i].set(log_norm),
        leaf_log_norm=state.leaf_log_norm.at[i].set(leaf_log),
        zero_fraction=state.zero_fraction.at[i].set(zero),
        inf_fraction=state.inf_fraction.at[i].set(inf),
        nan_fraction=state.nan_fraction.at[i].set(nan),
        clip_ratio=clip_ratio, leaf_names=state.leaf_names)
    return updates, new

  return optax.GradientTransformation(init, update)


def monitor_history(state: Any) -> MonitorHistory:
  """Reads a monitor's records out of an optimiser state.

  Args:
    state: a ``MonitorState``, or any optimiser state holding exactly one
      (an ``optax.chain`` tuple, ``apply_if_finite``, ``inject_hyperparams``
      ...). Not batched: index a vmapped state first.

  Returns:
    ``MonitorHistory``: numpy arrays of the steps still in the buffer,
    oldest first.
  """
  found = [s for s in jax.tree.leaves(
      state, is_leaf=lambda s: isinstance(s, MonitorState))
           if isinstance(s, MonitorState)]
  if len(found) != 1:
    raise ValueError(
        f"state must hold exactly one ex.monitor state, found {len(found)}"
        + ("; pass the one you want, e.g. opt_state[0]" if found else ""))
  s, = found
  count = np.asarray(s.count)
  if count.ndim:
    raise ValueError(f"state is batched (count has shape {count.shape}); "
                     f"index it first, e.g. jax.tree.map(lambda x: x[0], "
                     f"state)")
  history, count = s.log_norm.shape[0], int(count)
  n = min(count, history)
  step = np.arange(count - n, count)
  rows = step % history
  pick = lambda a: None if a is None else np.asarray(a)[rows]
  return MonitorHistory(
      step=step, log_norm=pick(s.log_norm),
      leaf_log_norm=pick(s.leaf_log_norm), zero_fraction=pick(s.zero_fraction),
      inf_fraction=pick(s.inf_fraction), nan_fraction=pick(s.nan_fraction),
      clip_ratio=pick(s.clip_ratio), leaf_names=tuple(s.leaf_names))


def skip_if_log_norm_jumps(inner: optax.GradientTransformation, k: float, *,
                           window: int = 64, warmup: int = 16,
                           max_consecutive_skips: int = 10
                           ) -> optax.GradientTransformationExtraArgs:
  """Skips a step whose gradient norm jumps above its running median.

  A step is skipped when ``log ||g|| > median + k``, the median taken over
  the log norms of the last ``window`` accepted steps with a finite norm,
  once ``warmup`` of them are in. Skipped: the update is all zeros and
  ``inner``'s state is left unchanged. A ``NaN`` or ``inf`` gradient is
  never a jump (``optax.apply_if_finite`` is the rule for those; the two
  nest either way round). After ``max_consecutive_skips`` skips in a row
  the next jump is accepted as a new level: the median restarts from it
  (and skipping waits for ``warmup`` accepted steps again).

  Args:
    inner: the optimiser to wrap.
    k: threshold in nats, > 0: skip when the norm grew by more than ``e^k``
      over the running median (``k = log 10`` skips a tenfold jump).
    window: accepted steps the median is taken over.
    warmup: accepted steps before any step is skipped, in ``[1, window]``.
    max_consecutive_skips: skips in a row before a jump is accepted, >= 0.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    ``SkipState``.
  """
  _validation.check_positive("k", k)
  window = _validation.check_int("window", window, 1)
  warmup = _validation.check_int("warmup", warmup, 1)
  if warmup > window:
    raise ValueError(f"warmup must be in [1, window={window}], got {warmup}")
  max_skips = _validation.check_int("max_consecutive_skips",
                                    max_consecutive_skips, 0)
  inner = optax.with_extra_args_support(inner)

  def init(params):
    _, dtype = _leaf_names_and_dtype(params)
    return SkipState(
        recent=jnp.full((window,), jnp.nan, dtype),
        accepted=jnp.zeros((), jnp.int32),
        consecutive_skips=jnp.zeros((), jnp.int32),
        total_skips=jnp.zeros((), jnp.int32),
        last_skipped=jnp.zeros((), bool), inner_state=inner.init(params))

  def update(updates, state, params=None, **extra_args):
    dtype = state.recent.dtype
    log_norm = _combine(_tree_stats(jax.tree.leaves(updates), dtype)[0])
    median = jnp.nanmedian(state.recent)
    jump = ((jnp.minimum(state.accepted, window) >= warmup)
            & (log_norm > median + k))
    skip = jump & (state.consecutive_skips < max_skips)
    # a jump accepted after max_skips skips is a new level: restart from it
    recent = jnp.where(jump & ~skip, jnp.nan, state.recent)
    accepted = jnp.where(jump & ~skip, 0, state.accepted)
    record = ~skip & jnp.isfinite(log_norm)
    recent = jnp.where(record, recent.at[accepted % window].set(log_norm),
                       recent)
    accepted = accepted + record.astype(jnp.int32)
    updates, inner_state = jax.lax.cond(
        skip,
        lambda: (jax.tree.map(jnp.zeros_like, updates),
                 state.inner_state),
        lambda: inner.update(updates, state.inner_state, params,
                             **extra_args))
    return updates, SkipState(
        recent=recent, accepted=accepted,
        consecutive_skips=jnp.where(skip, state.consecutive_skips + 1, 0),
        total_skips=state.total_skips + skip.astype(jnp.int32),
        last_skipped=skip, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init, update)


def _leaf_names_and_dtype(params):
  """Leaf paths (``"Dense_0/kernel"``) and the record dtype: at least
  float32, float64 if any leaf is."""
  paths_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  if not paths_leaves:
    raise ValueError("params has no array leaves to monitor")
  names, dtypes = [], []
  for i, (path, leaf) in enumerate(paths_leaves):
    name = jax.tree_util.keystr(path, simple=True, separator="/") or str(i)
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"params leaf {name!r} has dtype {dtype}; the monitor "
                      f"takes real floating-point leaves only")
    names.append(name)
    dtypes.append(_core.acc_dtype(dtype))
  return tuple(names), jnp.result_type(*dtypes)


# A plain float sum of squares inside these bounds is exact to rounding: no
# square overflowed, and squares flushed below the smallest normal number
# lose at most n * tiny / lo of it.
_PLAIN_RANGE = {jnp.dtype(jnp.float32): (1e-20, 1e37),
                jnp.dtype(jnp.float64): (1e-280, 1e300)}


def _tree_stats(leaves, dtype):
  """``(log ||x||, zero, inf, NaN fractions)``, each ``(n_leaves,)`` in
  ``dtype``.

  One fused pass per leaf (sum of squares, count of zeros) serves almost
  every step: its sum of squares is a normal number far from both ends of
  the range. Only when some leaf's is not (a norm beyond ~1e18 or below
  ~1e-10 in float32, a NaN or inf entry) does the step take, as a real
  branch, the scaled two-pass norm and count the non-finite entries.
  """
  sizes = [x.size for x in leaves]
  acc = [_core.acc_dtype(x.dtype) for x in leaves]
  sq = [jnp.sum(jnp.square(x.astype(a))) for x, a in zip(leaves, acc)]
  zeros = [jnp.sum(x == 0, dtype=jnp.int32 if n < 2**31 else dtype)
           for x, n in zip(leaves, sizes)]
  plain = [((q >= _PLAIN_RANGE[a][0]) & (q <= _PLAIN_RANGE[a][1]))
           | (z == n) for q, z, a, n in zip(sq, zeros, acc, sizes)]
  size = jnp.array([max(n, 1) for n in sizes], dtype)
  zero = jnp.stack(zeros).astype(dtype) / size

  def fast():
    log = 0.5 * jnp.log(jnp.stack([q.astype(dtype) for q in sq]))
    none = jnp.zeros(len(leaves), dtype)
    return log, none, none

  def scaled():
    log = jnp.stack([_core.log_norm(x).astype(dtype) if x.size
                     else jnp.array(-jnp.inf, dtype) for x in leaves])
    count = lambda f: jnp.stack([jnp.sum(f(x), dtype=dtype)
                                 for x in leaves]) / size
    return log, count(jnp.isinf), count(jnp.isnan)

  log, inf, nan = jax.lax.cond(jnp.all(jnp.stack(plain)), fast, scaled)
  return log, zero, inf, nan


def _combine(leaf_log):
  """Global ``log ||g||`` from the leaves' ``log ||g_i||``: a NaN leaf makes
  it NaN, all ``-inf`` (a zero gradient) gives ``-inf``."""
  total = 0.5 * jax.nn.logsumexp(2 * leaf_log)
  return jnp.where(jnp.any(jnp.isnan(leaf_log)), jnp.nan, total)


class _HostCallback:
  """Turns one step's arrays into the flat dict a logger takes."""

  def __init__(self, callback, names):
    self.callback, self.names = callback, names

  def __call__(self, count, log_norm, leaf_log, zero, inf, nan, ratio):
    out = {"step": count, "log_norm": log_norm}
    if ratio is not None:
      out["clip_ratio"] = ratio
    for key, values in (("log_norm", leaf_log), ("zero_fraction", zero),
                        ("inf_fraction", inf), ("nan_fraction", nan)):
      values = np.asarray(values)
      for j, name in enumerate(self.names):
        out[f"{key}/{name}"] = values[..., j]
    # Python numbers where unbatched: loggers take them as scalars
    self.callback({k: v.item() if np.ndim(v) == 0 else np.asarray(v)
                   for k, v in out.items()})


from exploding._plot_monitor import plot_monitor  # noqa: E402
