"""Process-wide defaults that the ``exploding`` command and the figure
runner apply, and a library user may (the library itself sets none)."""

from __future__ import annotations

import os

OPT_OUT = "EXPLODING_NO_XLA_CACHE"


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "exploding", "xla")


def use_compilation_cache(path: str | None = None) -> str | None:
  """Turns on jax's persistent compilation cache, so a new process reuses
  the sweep's compiled programs instead of compiling them again (XLA CPU,
  hidden 64: a new process's first sweep 2.9 s -> 0.9 s, see
  ``benchmarks/RESULTS.md``).

  A cache the user configured (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) wins; ``EXPLODING_NO_XLA_CACHE=1`` turns this off.

  Args:
    path: the cache folder (default ``$XDG_CACHE_HOME/exploding/xla``).

  Returns:
    The folder in use, or ``None`` if this call changed nothing.
  """
  import jax
  if os.environ.get(OPT_OUT) or jax.config.jax_compilation_cache_dir:
    return None
  path = path or default_cache_dir()
  jax.config.update("jax_compilation_cache_dir", path)
  # The sweep's programs compile in ~0.5-1.5 s, under jax's default 1 s
  # threshold for writing an entry (a user's setting wins).
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  return path
