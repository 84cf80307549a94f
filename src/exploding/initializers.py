"""Weight initialisers, each scaled by a weight scale.

The mean-field convention (Poole et al. 2016): entries of a Gaussian matrix
are ``N(0, weight_scale^2 / fan_in)``, so ``weight_scale`` is sigma_w and the
same axis serves theory and measurement. An orthogonal matrix (Haar
distributed, Saxe et al. 2014) times ``weight_scale`` has every singular
value equal to ``weight_scale``; the identity (the IRNN of Le et al. 2015)
likewise.

Models draw their matrices with ``weight_scale=1`` and multiply by the scale
*after* the matmul, ``g * (W0 @ h)``: one random matrix per seed, shared by
every scale of a sweep.

References:
  Poole et al. Exponential expressivity in deep neural networks through
  transient chaos. NeurIPS 2016.
  Saxe, McClelland, Ganguli. Exact solutions to the nonlinear dynamics of
  learning in deep linear neural networks. ICLR 2014.
  Le, Jaitly, Hinton. A simple way to initialize recurrent networks of
  rectified linear units. arXiv:1504.00941, 2015.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from exploding import _validation

__all__ = ["gaussian", "orthogonal", "identity", "initializer", "INITIALIZERS"]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


def gaussian(key: jax.Array, shape: tuple[int, int], *,
             weight_scale: Any = 1.0, dtype: Any = None) -> jax.Array:
  """Entries ``N(0, weight_scale^2 / fan_in)``, ``fan_in = shape[-1]``.

  Args:
    key: a PRNG key.
    shape: ``(fan_out, fan_in)``; the matrix acts as ``W @ h``.
    weight_scale: sigma_w, > 0.
    dtype: float dtype; ``None`` is the default float.

  Returns:
    A ``shape`` array of ``dtype``.
  """
  dtype = _validation.float_dtype(dtype)
  _check(shape, weight_scale)
  w = jax.random.normal(key, shape, jnp.float32) / jnp.sqrt(shape[-1])
  return (weight_scale * w).astype(dtype)


def orthogonal(key: jax.Array, shape: tuple[int, int], *,
               weight_scale: Any = 1.0, dtype: Any = None) -> jax.Array:
  """A Haar-random orthogonal matrix (semi-orthogonal if not square) times
  ``weight_scale``: every singular value equals ``weight_scale``."""
  dtype = _validation.float_dtype(dtype)
  _check(shape, weight_scale)
  w = jax.nn.initializers.orthogonal()(key, shape, jnp.float32)
  return (weight_scale * w).astype(dtype)


def identity(key: jax.Array, shape: tuple[int, int], *,
             weight_scale: Any = 1.0, dtype: Any = None) -> jax.Array:
  """``weight_scale * I`` (the IRNN initialisation); ``key`` is unused."""
  del key
  dtype = _validation.float_dtype(dtype)
  _check(shape, weight_scale)
  return (weight_scale * jnp.eye(*shape, dtype=jnp.float32)).astype(dtype)


INITIALIZERS: dict[str, Callable[..., jax.Array]] = {
    "gaussian": gaussian,
    "orthogonal": orthogonal,
    "identity": identity,
}


def initializer(name: str) -> Callable[..., jax.Array]:
  """Looks up an initialiser by name (``gaussian``, ``orthogonal``,
  ``identity``); raises ``ValueError`` listing the valid names."""
  return INITIALIZERS[_validation.check_choice("init", name, INITIALIZERS)]


def _check(shape, weight_scale):
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f"shape must be 2-D with sizes >= 1, got {shape}")
  _validation.check_positive("weight_scale", weight_scale)
