"""Gradient maps: measured growth over weight scale x steps x seed.

A ``GradientMap`` holds what a sweep measured, its coordinates and the full
configuration that produced it, so a map on disk says how to remake it. Its
summaries follow the dynamical-systems reading of the growth: the slope of
``log ||J_t ... J_1 v||`` in t is the largest Lyapunov exponent (the rate),
negative where gradients vanish, positive where they explode; the critical
scale is where it crosses zero (the edge of chaos, Poole et al. 2016).

References:
  Poole et al. Exponential expressivity in deep neural networks through
  transient chaos. NeurIPS 2016.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
import zipfile
from typing import Any, NamedTuple

import numpy as np

__all__ = ["GradientMap", "Estimate", "seed_mean"]


class Estimate(NamedTuple):
  """A value over seeds with its bootstrap interval.

  Attributes:
    value: the estimate from all seeds (float, or an array over the grid).
    low, high: the percentile bootstrap interval over seeds (resampled with
      replacement; ``level`` of the resamples inside), same shape.
    n_seeds: how many seeds entered (int, or an int array).
    level: the interval's coverage, e.g. 0.9.
  """

  value: Any
  low: Any
  high: Any
  n_seeds: Any
  level: float

  def __str__(self) -> str:
    if np.ndim(self.value) == 0:
      return (f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}] "
              f"({int(self.n_seeds)} seeds)")
    return (f"Estimate(value={self.value}, low={self.low}, high={self.high},"
            f" n_seeds={self.n_seeds}, level={self.level})")

_ARRAYS = ("log_growth", "log_state_norm", "overflow_step", "steps",
           "exponents")


@dataclasses.dataclass(frozen=True, eq=False)
class GradientMap:
  """A measured growth map (numpy arrays, natural logs).

  Attributes:
    log_growth: ``(*grid_shape, length, n_seeds)``; index t holds t + 1
      factors. For ``method="jvp"`` ``log ||J_{t+1} .. J_1 v||``; for
      ``"vjp"`` the gradient after ``t + 1`` steps of backprop
      (``log ||u J_T .. J_{T-t}||``); for ``"lyapunov"`` the running sum of
      the largest exponent. NaN after the forward state overflowed.
    log_state_norm: same shape, ``log ||h_{t+1}||`` of the forward pass.
    overflow_step: ``(*grid_shape, n_seeds)`` int, first overflowing step or
      -1.
    axes: knob name -> ``(n,)`` values, one per grid axis, in order.
    steps: ``(length,)`` = 1..length.
    config: everything that produced the map (JSON-serialisable dict).
    exponents: ``(*grid_shape, k, n_seeds)`` for ``method="lyapunov"``.
  """

  log_growth: np.ndarray
  log_state_norm: np.ndarray
  overflow_step: np.ndarray
  axes: dict[str, np.ndarray]
  steps: np.ndarray
  config: dict[str, Any]
  exponents: np.ndarray | None = None

  @property
  def shape(self) -> tuple[int, ...]:
    return self.log_growth.shape

  @property
  def grid_shape(self) -> tuple[int, ...]:
    return tuple(len(v) for v in self.axes.values())

  @property
  def weight_scales(self) -> np.ndarray:
    """``axes["weight_scale"]``."""
    if "weight_scale" not in self.axes:
      raise AttributeError(f"this map has no weight_scale axis; axes: "
                           f"{list(self.axes)}")
    return self.axes["weight_scale"]

  def sel(self, **indices: int) -> "GradientMap":
    """The map at fixed grid indices of some axes, e.g. ``m.sel(
    bias_scale=0)``: those axes are dropped (their values are recorded in
    ``config["selected"]``)."""
    unknown = set(indices) - set(self.axes)
    if unknown:
      raise ValueError(f"unknown axes {sorted(unknown)}; axes: "
                       f"{list(self.axes)}")
    index = tuple(indices.get(name, slice(None)) for name in self.axes)
    for name, i in indices.items():
      if not isinstance(i, (int, np.integer)) or not (
          -len(self.axes[name]) <= i < len(self.axes[name])):
        raise ValueError(f"{name} index must be an int in "
                         f"[0, {len(self.axes[name])}), got {i!r}")
    config = dict(self.config, selected={
        **self.config.get("selected", {}),
        **{k: float(self.axes[k][i]) for k, i in indices.items()}})
    pick = lambda a: None if a is None else a[index]
    return GradientMap(
        log_growth=pick(self.log_growth),
        log_state_norm=pick(self.log_state_norm),
        overflow_step=pick(self.overflow_step),
        axes={k: v for k, v in self.axes.items() if k not in indices},
        steps=self.steps, config=config, exponents=pick(self.exponents))

  def rate(self, burn_in: int | None = None, *,
           return_count: bool = False, interval: float | None = None,
           resamples: int = 2000, seed: int = 0):
    """Mean growth per step: the least-squares slope of ``log_growth``
    against steps after ``burn_in`` (default ``length // 4``), per seed,
    then averaged over seeds.

    Only finite values enter a seed's fit (its values before an overflow);
    a seed whose window holds an exact zero product (-inf) has rate -inf. A
    seed with fewer than two finite values (its state overflowed early) is
    left out of the mean: where seeds overflow, the mean is over the rest,
    biased low exactly where gradients explode; ``return_count=True`` says
    how many seeds entered each point. A map of length 1 has the one-step
    growth as its rate.

    Args:
      burn_in: steps left out of the fit (default ``length // 4``).
      return_count: also return the number of seeds per point.
      interval: e.g. ``0.9``: return an ``Estimate`` with the percentile
        bootstrap interval of the seed mean (seeds resampled with
        replacement, ``resamples`` times, from ``numpy`` seed ``seed``:
        deterministic).

    Returns:
      ``grid_shape`` float64 (NaN where no seed has two finite points); with
      ``return_count``, ``(rate, n_seeds)``, ``n_seeds`` int of the same
      shape; with ``interval``, an ``Estimate``.

    Example:
      >>> import exploding as ex
      >>> m = ex.sweep("rnn", weight_scales=[0.5, 2.0], length=32, seeds=4,
      ...              hidden=16, progress=False)
      >>> est = m.rate(interval=0.9)
      >>> bool((est.low <= est.value).all() and (est.value <= est.high).all())
      True
    """
    slope = self._seed_rates(burn_in)
    if interval is not None:
      return seed_mean(slope, interval=interval, resamples=resamples,
                       seed=seed)
    mean = _nanmean(slope)
    if return_count:
      return mean, np.sum(~np.isnan(slope), axis=-1)
    return mean

  def _seed_rates(self, burn_in):
    """``(*grid_shape, n_seeds)`` per-seed slopes (NaN: fewer than two
    finite points)."""
    T = self.log_growth.shape[-2]
    if T == 1:
      return np.asarray(self.log_growth[..., 0, :], np.float64)
    burn_in = T // 4 if burn_in is None else int(burn_in)
    if not 0 <= burn_in <= T - 2:
      raise ValueError(f"burn_in must be in [0, {T - 2}], got {burn_in}")
    y = np.asarray(self.log_growth[..., burn_in:, :], np.float64)
    x = np.asarray(self.steps[burn_in:], np.float64)[:, None]
    ok = np.isfinite(y)
    n = ok.sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
      xm = np.where(ok, x, 0).sum(-2) / n
      ym = np.where(ok, y, 0).sum(-2) / n
      dx = np.where(ok, x - xm[..., None, :], 0)
      slope = ((dx * np.where(ok, y - ym[..., None, :], 0)).sum(-2)
               / (dx**2).sum(-2))
    slope = np.where(n >= 2, slope, np.nan)
    return np.where(np.any(y == -np.inf, axis=-2), -np.inf, slope)

  def critical_scale(self, axis: str = "weight_scale",
                     burn_in: int | None = None, *,
                     interval: float | None = None, resamples: int = 2000,
                     seed: int = 0):
    """Where ``rate()`` first crosses zero from below along ``axis``
    (increasing knob values), linearly interpolated between grid values;
    NaN where it never does.

    Args:
      axis: the grid axis to cross along.
      burn_in: as in ``rate``.
      interval: e.g. ``0.9``: return an ``Estimate`` whose ``low``/``high``
        are the percentile bootstrap interval of the crossing (seeds
        resampled with replacement, the crossing of each resample's mean
        rate; ``resamples`` resamples from ``numpy`` seed ``seed``). Where
        some resamples never cross, the interval is over those that do.

    Returns:
      A float for a 1-axis map; else an array over the other axes (e.g.
      the critical weight scale at each bias scale: the critical line);
      with ``interval``, an ``Estimate``.
    """
    if axis not in self.axes:
      raise ValueError(f"axis must be one of {list(self.axes)}, got {axis!r}")
    i = list(self.axes).index(axis)
    g = np.asarray(self.axes[axis], np.float64)
    order = np.argsort(g, kind="stable")
    slope = np.moveaxis(self._seed_rates(burn_in), i, -2)[..., order, :]
    out = _crossings(_nanmean(slope), g[order])
    if interval is None:
      return float(out) if out.ndim == 0 else out
    boot = _nanmean(slope[..., _resample_index(slope.shape[-1], resamples,
                                               seed)])   # (..., n_g, B)
    low, high = _percentiles(_crossings(np.moveaxis(boot, -1, 0), g[order]),
                             interval, axis=0)
    n = np.sum(~np.isnan(slope), axis=-1).min(-1)
    as_out = lambda a: float(a) if np.ndim(a) == 0 else a
    return Estimate(as_out(out), as_out(low), as_out(high), as_out(n),
                    float(interval))

  def save(self, path: str | os.PathLike) -> None:
    """Writes one ``.npz`` (arrays + JSON config), atomically."""
    arrays = {k: getattr(self, k) for k in _ARRAYS
              if getattr(self, k) is not None}
    for i, (name, values) in enumerate(self.axes.items()):
      arrays[f"axis{i}"] = np.asarray(values)
    meta = {"config": self.config, "axes": list(self.axes)}
    arrays["meta_json"] = np.array(json.dumps(meta, sort_keys=True))
    save_npz_atomic(path, arrays)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "GradientMap":
    """Reads a map written by ``save``; warns if another package version
    wrote it; ``ValueError`` for a file that is not a saved map."""
    from exploding import __version__
    try:
      with np.load(path, allow_pickle=False) as f:
        files = set(getattr(f, "files", ()))
        missing = {"log_growth", "log_state_norm", "overflow_step", "steps",
                   "meta_json"} - files
        if missing:
          raise ValueError(f"{path} is not a saved GradientMap (missing "
                           f"{sorted(missing)})")
        meta = json.loads(str(f["meta_json"]))
        arrays = {k: f[k] for k in _ARRAYS if k in files}
        axes = {name: f[f"axis{i}"] for i, name in enumerate(meta["axes"])}
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError,
            json.JSONDecodeError) as e:
      raise ValueError(f"{path} is not a readable GradientMap: {e}") from None
    config = meta["config"]
    if config.get("version") != __version__:
      warnings.warn(f"{path} was written by exploding "
                    f"{config.get('version')}, this is {__version__}",
                    UserWarning, stacklevel=2)
    return cls(config=config, axes=axes, **arrays)

  def __repr__(self) -> str:
    c = self.config
    axes = ", ".join(f"{k} {np.min(v):g}..{np.max(v):g}"
                     for k, v in self.axes.items())
    return (f"GradientMap({c.get('model')}, method={c.get('method')}, "
            f"shape={self.shape}, {axes})")


def seed_mean(values, *, interval: float = 0.9, resamples: int = 2000,
              seed: int = 0) -> Estimate:
  """The mean over the last axis (seeds) of ``values`` (NaN left out) and its
  percentile bootstrap interval, as ``GradientMap.rate(interval=...)``
  computes it: for per-seed numbers a figure measures itself.

  Example:
    >>> import numpy as np, exploding as ex
    >>> est = ex.seed_mean(np.array([1.0, 2.0, 3.0, 4.0]))
    >>> float(est.value), int(est.n_seeds), bool(est.low < 2.5 < est.high)
    (2.5, 4, True)
  """
  values = np.asarray(values, np.float64)
  boot = _nanmean(values[..., _resample_index(values.shape[-1], resamples,
                                              seed)])
  low, high = _percentiles(boot, interval)
  return Estimate(_nanmean(values), low, high,
                  np.sum(~np.isnan(values), axis=-1), float(interval))


def _nanmean(a):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(a, axis=-1)


def _resample_index(n_seeds, resamples, seed):
  """``(resamples, n_seeds)`` seed indices drawn with replacement."""
  if not 0 < int(resamples):
    raise ValueError(f"resamples must be positive, got {resamples}")
  return np.random.default_rng(seed).integers(0, n_seeds,
                                              (int(resamples), n_seeds))


def _percentiles(boot, level, axis=-1):
  if not 0 < level < 1:
    raise ValueError(f"interval must be in (0, 1), e.g. 0.9; got {level}")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    low, high = np.nanpercentile(boot, [50 * (1 - level), 50 * (1 + level)],
                                 axis=axis)
  return low, high


def _crossings(r, g):
  """``_first_crossing`` along the last axis of ``r``."""
  return np.apply_along_axis(_first_crossing, -1, r, g)


def _first_crossing(r, g):
  for i in range(len(r) - 1):
    a, b = r[i], r[i + 1]
    if np.isnan(a) or np.isnan(b) or not (a < 0 <= b):
      continue
    if np.isinf(a):
      return g[i + 1]
    return g[i] + (g[i + 1] - g[i]) * (-a) / (b - a)
  return np.nan


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
  """``np.savez`` to a temporary file in the same folder, then rename: a
  reader never sees a partial file, whenever the writer is killed."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp.npz")
  try:
    with os.fdopen(fd, "wb") as fh:
      np.savez(fh, **arrays)
      fh.flush()
      os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 ignores the umask
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
