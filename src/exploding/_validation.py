"""Argument checks shared by the public entry points.

Each raises ``ValueError`` or ``TypeError`` naming the argument and the
allowed range, so a bad call fails at the call site and never as a silent NaN
deep inside a scan.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(tree: Any) -> bool:
  """True if any leaf is an abstract tracer (inside jit/vmap/grad)."""
  return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def check_positive(name: str, value: Any) -> None:
  """``value`` (a scalar or array; skipped under tracing) must be > 0."""
  if is_traced(value):
    return
  arr = np.asarray(value, dtype=float)
  if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
    raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def check_nonnegative(name: str, value: Any) -> None:
  if is_traced(value):
    return
  arr = np.asarray(value, dtype=float)
  if not np.all(np.isfinite(arr)) or np.any(arr < 0):
    raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def check_int(name: str, value: Any, minimum: int = 1) -> int:
  """``value`` must be an integer >= ``minimum``; returns it as ``int``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
  choices = sorted(choices)
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")
  return value


def check_finite(name: str, tree: Any) -> None:
  """No NaN or inf in any float leaf of ``tree`` (skipped under tracing)."""
  if tree is None or is_traced(tree):
    return
  for leaf in jax.tree.leaves(tree):
    arr = np.asarray(leaf)
    if np.issubdtype(arr.dtype, np.inexact) or arr.dtype == jnp.bfloat16:
      if not np.all(np.isfinite(arr.astype(np.float64))):
        raise ValueError(f"{name} contains NaN or inf")


def float_dtype(dtype: Any) -> jnp.dtype:
  """``None`` -> the default float (float32, or float64 under x64)."""
  if dtype is None:
    return jnp.dtype(jnp.result_type(float))
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be a floating dtype, got {dtype}")
  return dtype


