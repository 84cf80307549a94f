"""Gradient clipping via optax, with what the clip did to the gradient.

Clipping is the standard remedy for exploding gradients (Pascanu et al.
2013, Section 3.2, Algorithm 1): when the gradient norm ``||g||`` exceeds a
threshold ``c``, rescale it to ``g * c / ||g||``. The direction is kept, only
the step length changes. Clipping each entry to ``[-c, c]`` instead bounds
every coordinate but, in general, rotates the gradient. This module wraps the
optax transformations (no clipping arithmetic of its own) under one name per
method and reports the global norm before and after, the cosine between the
clipped and raw gradient, and whether the raw gradient was finite.

Methods:
  ``"none"``: identity (``optax.identity``).
  ``"value"``: each entry clipped to ``[-threshold, threshold]``
    (``optax.clip``).
  ``"norm"``: global norm clipped to ``threshold``
    (``optax.clip_by_global_norm``; Pascanu et al. 2013, Algorithm 1).
  ``"block_rms"``: each leaf's RMS clipped to ``threshold``
    (``optax.clip_by_block_rms``).
  ``"adaptive"``: unit-wise norm clipped to ``threshold * max(||p||, 1e-3)``
    (``optax.adaptive_grad_clip``; Brock et al. 2021, Eq. 3). Needs params.

Float range: optax computes the global norm as ``sqrt(sum g**2)``, which
overflows in float32 once ``||g|| > ~1.8e19``; optax then divides by ``inf``
and returns an all-zero "clipped" gradient from a finite one. Exploding
gradients reach that range, so ``"value"``, ``"norm"`` and ``"block_rms"``
here rescale the gradient and threshold by the same power of two before
calling optax and undo it after (exact: these clips are positively
homogeneous, ``clip(s g, s c) = s clip(g, c)``). ``"adaptive"`` compares the
gradient with the parameters, is not homogeneous in the gradient alone, and
is passed to optax unchanged.

References:
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML 2013, Section 3.2 and Algorithm 1.
  Brock, De, Smith & Simonyan, "High-performance large-scale image
  recognition without normalization", ICML 2021, Eq. 3.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from exploding import _validation

METHODS = ("none", "value", "norm", "block_rms", "adaptive")

# A power-of-two rescale commutes with these clips exactly.
_HOMOGENEOUS = ("value", "norm", "block_rms")


class ClipResult(NamedTuple):
  """A clipped gradient and what clipping did to it.

  Attributes:
    grads: the clipped gradient, a pytree shaped like the input.
    pre_norm: scalar, global L2 norm of the raw gradient; ``inf`` or ``NaN``
      when the raw gradient is not finite (never a made-up number).
    post_norm: scalar, global L2 norm of the clipped gradient.
    cosine: scalar, ``<clipped, raw> / (||clipped|| ||raw||)``; 1 when the
      direction is unchanged, ``NaN`` when either vector is zero or not
      finite.
    finite: scalar bool, whether every entry of the raw gradient is finite.
  """

  grads: Any
  pre_norm: jax.Array
  post_norm: jax.Array
  cosine: jax.Array
  finite: jax.Array


def clip_gradient(
    grads: Any,
    method: str,
    threshold: Any = None,
    *,
    params: Any = None,
) -> ClipResult:
  """Clips a gradient pytree with one optax method and measures the effect.

  Jit-compatible with ``method`` static; ``threshold`` may be traced.

  Args:
    grads: pytree of float arrays (any shapes, any float dtypes).
    method: one of ``"none"``, ``"value"``, ``"norm"``, ``"block_rms"``,
      ``"adaptive"`` (see the module docstring).
    threshold: scalar > 0: the max entry (``"value"``), max global norm
      (``"norm"``), max per-leaf RMS (``"block_rms"``) or max ratio of
      gradient to parameter norm (``"adaptive"``). Ignored (may be ``None``)
      for ``"none"``.
    params: pytree shaped like ``grads``; required for ``"adaptive"`` only.

  Returns:
    ``ClipResult(grads, pre_norm, post_norm, cosine, finite)``; the scalars
    are in the gradient's (promoted) float dtype, ``finite`` is bool.

  Raises:
    ValueError: unknown ``method``, ``threshold`` not finite and > 0,
      ``params`` missing for ``"adaptive"``, or ``grads`` with no leaves.

  References:
    Pascanu et al. 2013, Algorithm 1 (clipping by norm).

  Example:
    >>> g = {"w": jnp.array([3.0, 4.0])}
    >>> r = clip_gradient(g, "norm", 1.0)
    >>> print(f"{r.pre_norm:.3f} {r.post_norm:.3f} {r.cosine:.3f}")
    5.000 1.000 1.000
  """
  clipper(method, threshold)  # validates method and threshold
  if method == "adaptive" and params is None:
    raise ValueError("params is required for method='adaptive'")
  if not jax.tree.leaves(grads):
    raise ValueError("grads must contain at least one array")
  return _clip_and_measure(grads, threshold, params, method)


def clipper(
    method: str,
    threshold: Any = None,
    *,
    skip_nonfinite: bool = False,
    max_consecutive_errors: int = 2**31 - 2,
) -> optax.GradientTransformation:
  """An optax transformation that clips with ``method``, for an optax chain.

  With ``skip_nonfinite=True`` the clip is wrapped in
  ``optax.apply_if_finite``: a gradient with a NaN or inf entry is replaced
  by zeros (this transformation's output only) until
  ``max_consecutive_errors`` such gradients in a row, after which it is
  passed on. Zeros do not stop a stateful optimiser later in the chain
  (momentum keeps moving); to skip the whole step, wrap the whole chain
  instead: ``optax.apply_if_finite(optax.chain(clipper(...), opt), n)``.

  Args:
    method: one of ``"none"``, ``"value"``, ``"norm"``, ``"block_rms"``,
      ``"adaptive"``.
    threshold: scalar > 0 (see ``clip_gradient``); ignored for ``"none"``.
    skip_nonfinite: wrap in ``optax.apply_if_finite``.
    max_consecutive_errors: int >= 0, passed to ``optax.apply_if_finite``;
      the default never gives up.

  Returns:
    An ``optax.GradientTransformation``; for ``"adaptive"`` its ``update``
    needs ``params``.

  Raises:
    ValueError: unknown ``method`` or bad ``threshold``.

  Example:
    >>> opt = optax.chain(clipper("norm", 1.0), optax.sgd(0.1))
  """
  _validation.check_choice("method", method, METHODS)
  if method != "none":
    if threshold is None:
      raise ValueError(f"threshold is required for method={method!r}")
    if not _validation.is_traced(threshold) and jnp.ndim(threshold) != 0:
      raise ValueError(f"threshold must be a scalar, got shape "
                       f"{jnp.shape(threshold)}")
    _validation.check_positive("threshold", threshold)
  if method in _HOMOGENEOUS:
    transform = _rescaled(method, threshold)
  else:
    transform = _optax_clip(method, threshold)
  if skip_nonfinite:
    _validation.check_int("max_consecutive_errors", max_consecutive_errors,
                          minimum=0)
    transform = optax.apply_if_finite(transform, max_consecutive_errors)
  return transform


@functools.partial(jax.jit, static_argnums=3)
def _clip_and_measure(grads, threshold, params, method):
  transform = clipper(method, threshold)
  clipped, _ = transform.update(grads, transform.init(grads), params)
  finite = _all_finite(grads)
  pre_norm = _global_norm(grads)
  post_norm = _global_norm(clipped)
  cosine = _cosine(clipped, grads)
  cosine = jnp.where(finite, cosine, jnp.nan)
  return ClipResult(clipped, pre_norm, post_norm, cosine, finite)


def _optax_clip(method: str, threshold: Any) -> optax.GradientTransformation:
  if method == "none":
    return optax.identity()
  if method == "value":
    return optax.clip(threshold)
  if method == "norm":
    return optax.clip_by_global_norm(threshold)
  if method == "block_rms":
    return optax.clip_by_block_rms(threshold)
  return optax.adaptive_grad_clip(threshold)


def _rescaled(method: str, threshold: Any) -> optax.GradientTransformation:
  """The optax clip applied to ``g / s`` with threshold ``c / s``, times s.

  ``s`` is the power of two nearest above ``max |g|`` (1 for a zero or
  non-finite gradient), so optax's sum of squares cannot overflow; the
  transformations are stateless, so the threshold can be built per call.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    dtype = jnp.result_type(*jax.tree.leaves(updates))
    scale = _power_of_two_scale(updates, dtype)
    inner = _optax_clip(method, jnp.asarray(threshold, dtype) / scale)
    scaled = jax.tree.map(lambda u: u / scale.astype(u.dtype), updates)
    clipped, _ = inner.update(scaled, inner.init(scaled))
    clipped = jax.tree.map(lambda c, u: (c * scale.astype(u.dtype)).astype(
        u.dtype), clipped, updates)
    return clipped, state

  return optax.GradientTransformation(init_fn, update_fn)


def _max_abs(tree: Any, dtype: Any) -> jax.Array:
  return jnp.max(jnp.stack([jnp.max(jnp.abs(x)).astype(dtype)
                            for x in jax.tree.leaves(tree)]))


def _power_of_two_scale(tree: Any, dtype: Any) -> jax.Array:
  big = _max_abs(tree, dtype)
  _, exponent = jnp.frexp(big)
  usable = jnp.isfinite(big) & (big > 0)
  return jnp.where(usable, jnp.ldexp(jnp.ones((), dtype), exponent),
                   jnp.ones((), dtype))


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)]))


def _global_norm(tree: Any) -> jax.Array:
  """L2 norm over all leaves, scaled by max |x| so it cannot overflow.

  Non-finite trees get optax's unscaled norm: ``inf`` or ``NaN``, as the
  raw values warrant.
  """
  dtype = jnp.result_type(*jax.tree.leaves(tree))
  big = _max_abs(tree, dtype)
  safe = jnp.where(jnp.isfinite(big) & (big > 0), big, jnp.ones((), dtype))
  scaled = jax.tree.map(lambda x: x.astype(dtype) / safe, tree)
  norm = safe * optax.tree.norm(scaled)
  return jnp.where(_all_finite(tree), norm, optax.tree.norm(tree)).astype(
      dtype)


def _cosine(a: Any, b: Any) -> jax.Array:
  dtype = jnp.result_type(*jax.tree.leaves(a), *jax.tree.leaves(b))

  def unit(tree):
    big = _max_abs(tree, dtype)
    tree = jax.tree.map(lambda x: x.astype(dtype) / big, tree)
    return tree, optax.tree.norm(tree)

  (ua, na), (ub, nb) = unit(a), unit(b)
  dot = optax.tree.vdot(ua, ub)
  # Zero vectors give 0/0 = NaN above already; keep it NaN, not a number.
  return (dot / (na * nb)).astype(dtype)
