"""Argument checks shared by the public entry points.

Each raises ``ValueError`` or ``TypeError`` naming the argument and the
allowed range, so a bad call fails at the call site and never as a silent NaN
deep inside a scan.
"""

from __future__ import annotations

import os
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


def check_bool(name: str, value: Any) -> bool:
  """``value`` must be a bool (``"no"`` is not ``False``); returns it."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be a bool, got {value!r}")
  return bool(value)


def check_writable_dir(name: str, path: Any) -> str:
  """Creates folder ``path`` if needed and checks that files can be written
  there; returns it as ``str``."""
  import tempfile
  try:
    path = os.fspath(path)
  except TypeError:
    raise TypeError(f"{name} must be a path, got {path!r}") from None
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{name} {path!r} exists and is not a folder")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise ValueError(f"{name} {path!r} is not a writable folder: "
                     f"{e.strerror or e}") from None
  return path


def check_output_file(name: str, path: Any,
                      suffixes: Iterable[str] | None = None) -> str:
  """``path`` can be written as a file; returns it as ``str``.

  It must not be a folder, must end in one of ``suffixes`` (if given,
  case-insensitive, e.g. ``".png"``), and its folder must be writable or
  creatable. Creates nothing: callers check before a long computation and
  create the folder when they write.
  """
  path = _fspath(name, path)
  if path.endswith(os.sep) or os.path.isdir(path):
    raise ValueError(f"{name} {path!r} is a folder, not a file name")
  if suffixes is not None:
    suffixes = sorted(suffixes)
    if os.path.splitext(path)[1].lower() not in suffixes:
      raise ValueError(f"{name} must end in one of {', '.join(suffixes)}, "
                       f"got {path!r}")
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise ValueError(f"{name} {path!r} exists and is not writable")
  _check_creatable(name, path, os.path.dirname(os.path.abspath(path)))
  return path


def check_output_dir(name: str, path: Any) -> str:
  """``path`` is a writable folder or can be created as one; returns it as
  ``str``. Creates nothing (unlike ``check_writable_dir``)."""
  path = _fspath(name, path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{name} {path!r} exists and is not a folder")
  _check_creatable(name, path, os.path.abspath(path))
  return path


def _fspath(name: str, path: Any) -> str:
  try:
    path = os.fspath(path)
  except TypeError:
    raise TypeError(f"{name} must be a path, got {path!r}") from None
  if not isinstance(path, str) or not path:
    raise ValueError(f"{name} must be a non-empty path, got {path!r}")
  return path


def _check_creatable(name: str, path: str, folder: str) -> None:
  """``folder`` exists and takes new files, or its nearest existing
  ancestor is a folder that does (so ``os.makedirs`` will succeed)."""
  import tempfile
  existing = folder
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"{name} {path!r} is under {existing!r}, which is a "
                     f"file, not a folder")
  try:   # write permission, read-only mounts, quotas: try it
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise ValueError(f"{name} {path!r}: cannot write in folder {existing!r} "
                     f"({e.strerror or e})") from None
