"""Where a product of T equal factors leaves a float format's range.

A gradient through T steps that each scale it by |w| is ``|w|^T``; in a
float format it becomes ``inf`` once it exceeds ``max`` (round to nearest:
from ``max + ulp(max)/2`` on), loses precision below ``tiny`` (the smallest
normal), and becomes exactly 0 below half the smallest subnormal. XLA on
CPU flushes float32 and bfloat16 subnormals to zero, so there a product is
0 as soon as it leaves the normal range; numpy keeps subnormals.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import ml_dtypes
import numpy as np

_MAX_SIMULATED = 1 << 17  # steps simulated by repeated multiplication


class DtypeLimits(NamedTuple):
  """Range of a float format (all Python floats).

  Attributes:
    max: largest finite value.
    tiny: smallest positive normal value.
    smallest_subnormal: smallest positive subnormal value.
    eps: spacing between 1 and the next value.
    log_max: ``log(max)`` (natural).
    log_tiny: ``log(tiny)`` (natural).
  """

  max: float
  tiny: float
  smallest_subnormal: float
  eps: float
  log_max: float
  log_tiny: float


def _dtype(dtype) -> np.dtype:
  try:
    dt = np.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"dtype must be a float dtype, got {dtype!r}") from e
  names = ("float16", "bfloat16", "float32", "float64")
  if dt.name not in names:
    raise ValueError(f"dtype must be one of {list(names)}, got {dtype!r}")
  return dt


def dtype_limits(dtype) -> DtypeLimits:
  """The range of ``float16``, ``bfloat16``, ``float32`` or ``float64``.

  Args:
    dtype: a dtype or its name (``jnp.bfloat16`` and ``"bfloat16"`` work).

  Returns:
    A ``DtypeLimits``.

  References:
    IEEE 754-2008; Kalamkar et al. A study of BFLOAT16 for deep learning
    training. 2019.

  Example:
    >>> dtype_limits("float16").max
    65504.0
  """
  fi = ml_dtypes.finfo(_dtype(dtype))
  mx, tiny = float(fi.max), float(fi.smallest_normal)
  return DtypeLimits(mx, tiny, float(fi.smallest_subnormal), float(fi.eps),
                     math.log(mx), math.log(tiny))


def overflow_step(w, dtype) -> int:
  """First T >= 1 at which ``w^T``, multiplied out in ``dtype``, is inf.

  ``w`` is first rounded to ``dtype``; then ``x_1 = w``, ``x_(t+1) =
  fl(x_t w)`` is simulated exactly in that dtype (numpy; ml_dtypes for
  bfloat16) when the log-space estimate ``ceil(log(max + ulp/2) / log|w|)``
  is at most 131072 steps, and that estimate is returned beyond (rounding
  in so many products may shift the true step slightly).

  Args:
    w: the per-step factor, a finite Python or numpy scalar.
    dtype: ``float16``, ``bfloat16``, ``float32`` or ``float64``.

  Returns:
    T, or -1 if ``|w| <= 1`` in that dtype (never overflows).

  References:
    Pascanu et al. 2013 (gradients as products of per-step factors).

  Example:
    >>> overflow_step(2.0, "float16"), overflow_step(2.0, "float32")
    (16, 128)
  """
  dt = _dtype(dtype)
  a = _cast_abs("w", w, dt)
  if not np.isfinite(a):
    return 1
  if a <= 1:
    return -1
  lim = dtype_limits(dt)
  ulp_max = 2.0**(math.frexp(lim.max)[1] - 1) * lim.eps
  log_threshold = math.log(lim.max) + math.log1p(0.5 * ulp_max / lim.max)
  estimate = max(1, math.ceil(log_threshold / math.log(float(a))))
  if estimate > _MAX_SIMULATED:
    return estimate
  return _simulate(a, lambda x: not np.isfinite(x), 2 * estimate + 8)


def underflow_step(w, dtype, subnormals: bool = False) -> int:
  """First T >= 1 at which ``|w|^T``, multiplied out in ``dtype``, underflows.

  With ``subnormals=False`` underflow means leaving the normal range
  (``|x_T| < tiny``), which is where XLA on CPU (float32, bfloat16) turns
  the value into 0; with ``subnormals=True`` it means becoming exactly 0
  with gradual underflow kept (numpy). The products are simulated as in
  ``overflow_step``. A product can stall: for ``w > 1/2`` the smallest
  subnormal times w rounds back to itself, and then it never reaches 0.

  Args:
    w: the per-step factor, a finite Python or numpy scalar.
    dtype: ``float16``, ``bfloat16``, ``float32`` or ``float64``.
    subnormals: count underflow at 0 (True) or below ``tiny`` (False).

  Returns:
    T, or -1 if ``|w| >= 1`` or the product stalls above the threshold.

  References:
    IEEE 754-2008, Section 7.5 (underflow).

  Example:
    >>> underflow_step(0.5, "float32")
    127
  """
  dt = _dtype(dtype)
  a = _cast_abs("w", w, dt)
  if a == 0:
    return 1
  if a >= 1:
    return -1
  lim = dtype_limits(dt)
  if subnormals:
    log_threshold = math.log(lim.smallest_subnormal / 2)
    done = lambda x: x == 0  # noqa: E731
  else:
    log_threshold = lim.log_tiny
    done = lambda x: x < lim.tiny  # noqa: E731
  estimate = max(1, math.floor(log_threshold / math.log(float(a))) + 1)
  if estimate > _MAX_SIMULATED:
    return estimate
  return _simulate(a, done, 2 * estimate + 8)


def _cast_abs(name, w, dt):
  try:
    value = float(w)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a real scalar, got {w!r}") from e
  if math.isnan(value):
    raise ValueError(f"{name} must not be NaN, got {w!r}")
  with np.errstate(over="ignore"):
    return np.abs(np.asarray(value, dtype=np.float64).astype(dt)[()])


def _simulate(a, done, max_steps: int) -> int:
  """First t with done(x_t), ``x_1 = a``, ``x_(t+1) = fl(x_t a)``; -1 on a stall."""
  x = a
  with np.errstate(over="ignore", under="ignore"):
    for t in range(1, max_steps + 1):
      if done(x):
        return t
      nxt = x * a
      if nxt == x:
        return -1
      x = nxt
  return -1
