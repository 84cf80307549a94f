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
from typing import Any

import numpy as np

__all__ = ["GradientMap"]

_ARRAYS = ("log_growth", "log_state_norm", "overflow_step", "weight_scales",
           "steps", "exponents")


@dataclasses.dataclass(frozen=True, eq=False)
class GradientMap:
  """A measured growth map (numpy arrays, natural logs).

  Attributes:
    log_growth: ``(n_scales, length, n_seeds)``. For ``method="jvp"`` index
      t is ``log ||J_{t+1} .. J_1 v||``; for ``"vjp"`` it is the gradient
      after ``t + 1`` steps of backprop (``log ||u J_T .. J_{T-t}||``); for
      ``"lyapunov"`` the running sum of the largest exponent. NaN after the
      forward state overflowed.
    log_state_norm: same shape, ``log ||h_{t+1}||`` of the forward pass.
    overflow_step: ``(n_scales, n_seeds)`` int, first overflowing step or -1.
    weight_scales: ``(n_scales,)``; steps: ``(length,)`` = 1..length.
    config: everything that produced the map (JSON-serialisable dict).
    exponents: ``(n_scales, k, n_seeds)`` for ``method="lyapunov"``.
  """

  log_growth: np.ndarray
  log_state_norm: np.ndarray
  overflow_step: np.ndarray
  weight_scales: np.ndarray
  steps: np.ndarray
  config: dict[str, Any]
  exponents: np.ndarray | None = None

  @property
  def shape(self) -> tuple[int, int, int]:
    return self.log_growth.shape

  def rate(self, burn_in: int | None = None) -> np.ndarray:
    """Mean growth per step: the least-squares slope of ``log_growth``
    against steps after ``burn_in`` (default ``length // 4``), per seed,
    then averaged over seeds.

    Only finite values enter a seed's fit (its values before an overflow);
    a seed whose window holds an exact zero product (-inf) has rate -inf.

    Returns:
      ``(n_scales,)`` float64; NaN where no seed has two finite points.
    """
    T = self.log_growth.shape[1]
    burn_in = T // 4 if burn_in is None else int(burn_in)
    if not 0 <= burn_in <= T - 2:
      raise ValueError(f"burn_in must be in [0, {T - 2}], got {burn_in}")
    y = np.asarray(self.log_growth[:, burn_in:, :], np.float64)
    x = np.asarray(self.steps[burn_in:], np.float64)[None, :, None]
    ok = np.isfinite(y)
    n = ok.sum(1)
    w = ok.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
      xm = (w * x).sum(1) / n
      ym = np.where(ok, y, 0).sum(1) / n
      dx = np.where(ok, x - xm[:, None], 0)
      slope = (dx * np.where(ok, y - ym[:, None], 0)).sum(1) / (dx**2).sum(1)
    slope = np.where(n >= 2, slope, np.nan)
    slope = np.where(np.any(y == -np.inf, axis=1), -np.inf, slope)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      return np.nanmean(slope, axis=1)

  def critical_scale(self, burn_in: int | None = None) -> float:
    """The weight scale where ``rate()`` first crosses zero from below,
    linearly interpolated between grid scales; NaN if it never does."""
    r = self.rate(burn_in)
    g = np.asarray(self.weight_scales, np.float64)
    for i in range(len(r) - 1):
      a, b = r[i], r[i + 1]
      if np.isnan(a) or np.isnan(b) or not (a < 0 <= b):
        continue
      if np.isinf(a):
        return float(g[i + 1])
      return float(g[i] + (g[i + 1] - g[i]) * (-a) / (b - a))
    return float("nan")

  def save(self, path: str | os.PathLike) -> None:
    """Writes one ``.npz`` (arrays + JSON config), atomically."""
    arrays = {k: getattr(self, k) for k in _ARRAYS
              if getattr(self, k) is not None}
    arrays["config_json"] = np.array(json.dumps(self.config, sort_keys=True))
    save_npz_atomic(path, arrays)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "GradientMap":
    """Reads a map written by ``save``; warns if another package version
    wrote it."""
    from exploding import __version__
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in _ARRAYS if k in f.files}
      config = json.loads(str(f["config_json"]))
    if config.get("version") != __version__:
      warnings.warn(f"{path} was written by exploding "
                    f"{config.get('version')}, this is {__version__}",
                    UserWarning, stacklevel=2)
    return cls(config=config, **arrays)

  def __repr__(self) -> str:
    c = self.config
    return (f"GradientMap({c.get('model')}, method={c.get('method')}, "
            f"shape={self.shape}, scales {self.weight_scales.min():g}.."
            f"{self.weight_scales.max():g})")


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
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
