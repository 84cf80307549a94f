"""Gradient clipping via optax, with what the clip did to the gradient.

Clipping is the standard remedy for exploding gradients (Pascanu et al.
2013, Section 3.2, Algorithm 1): when the gradient norm ``||g||`` exceeds a
threshold ``c``, rescale it to ``g * c / ||g||``. The direction is kept, only
the step length changes. Clipping each entry to ``[-c, c]`` instead bounds
every coordinate but, in general, rotates the gradient. This module gives the
optax transformations one name per method (with their formulas, made safe
for the float range below) and reports the global norm before and after, the
cosine between the clipped and raw gradient, and whether the raw gradient
was finite.

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
gradients reach that range, so every method here

* computes in the gradient's promoted float dtype, at least float32 (float16
  overflows at 65504, so its norms and rescales do not fit in it), and casts
  each clipped leaf back to that leaf's own dtype (leaves may mix dtypes);
* for ``"norm"`` and ``"block_rms"``, divides the gradient by a power of two
  ``s`` (global for ``"norm"``, per leaf for ``"block_rms"``) with
  ``max |g / s|`` in ``[1, 4)``, so the sum of squares cannot overflow, and
  applies optax's formula ``g * c / ||g||`` as ``(g / s) * (c / ||g / s||)``
  (dividing by ``s`` is exact down to the subnormals; ``||g / s|| >= 1``,
  so neither factor overflows; ``c / s``, which may underflow, only enters
  the comparison ``||g|| > c``). A gradient within the threshold is
  returned unchanged, bit for bit.

``"value"`` needs no rescale and ``"adaptive"`` (which compares the gradient
with the parameters) is optax's, in the compute dtype. The threshold must be
finite and > 0 in the compute dtype (``1e39`` is ``inf`` in float32).

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

__all__ = ["ClipResult", "METHODS", "clip_gradient", "clipper"]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


METHODS = ("none", "value", "norm", "block_rms", "adaptive")

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
    grads: pytree of real float arrays (any shapes; float16, bfloat16,
      float32, float64, mixed across leaves); empty leaves pass through.
    method: one of ``"none"``, ``"value"``, ``"norm"``, ``"block_rms"``,
      ``"adaptive"`` (see the module docstring).
    threshold: scalar, finite and > 0 in the compute dtype (the gradient's
      promoted float dtype, at least float32): the max entry (``"value"``),
      max global norm (``"norm"``), max per-leaf RMS (``"block_rms"``) or
      max ratio of gradient to parameter norm (``"adaptive"``). Ignored (may
      be ``None``) for ``"none"``.
    params: pytree shaped like ``grads``; required for ``"adaptive"`` only.

  Returns:
    ``ClipResult(grads, pre_norm, post_norm, cosine, finite)``; each clipped
    leaf has its input leaf's dtype; the scalars are in the compute dtype
    (at least float32, so a float16 norm above 65504 is not ``inf``),
    ``finite`` is bool.

  Raises:
    ValueError: unknown ``method``; ``threshold`` missing, not a scalar, or
      not finite and > 0 in the compute dtype; ``params`` missing for
      ``"adaptive"`` or not shaped like ``grads``; ``grads`` with no entries.
    TypeError: a ``grads`` leaf that is not a real float array (integer,
      bool, complex).

  References:
    Pascanu et al. 2013, Algorithm 1 (clipping by norm).

  Example:
    >>> g = {"w": jnp.array([3.0, 4.0])}
    >>> r = clip_gradient(g, "norm", 1.0)
    >>> print(f"{r.pre_norm:.3f} {r.post_norm:.3f} {r.cosine:.3f}")
    5.000 1.000 1.000
  """
  clipper(method, threshold)  # validates method and threshold's form
  dtype = _compute_dtype("grads", grads)
  if not any(jnp.size(x) for x in jax.tree.leaves(grads)):
    raise ValueError("grads must contain at least one entry, got "
                     f"{jax.tree.map(jnp.shape, grads)!r} (shapes)")
  if method != "none":
    _check_threshold(threshold, dtype)
  if method == "adaptive":
    _check_params(params, grads)
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

  The gradient's dtype is known only in ``update``: there (at trace time)
  a non-float leaf raises ``TypeError`` and a threshold that is not finite
  and > 0 in the compute dtype raises ``ValueError``.

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
  transform = _transform(method, threshold)
  if skip_nonfinite:
    _validation.check_int("max_consecutive_errors", max_consecutive_errors,
                          minimum=0)
    transform = optax.apply_if_finite(transform, max_consecutive_errors)
  return transform


@functools.partial(jax.jit, static_argnums=3)
def _clip_and_measure(grads, threshold, params, method):
  transform = clipper(method, threshold)
  clipped, _ = transform.update(grads, transform.init(grads), params)
  dtype = _compute_dtype("grads", grads)
  grads_up = _cast(grads, dtype)
  clipped_up = _cast(clipped, dtype)
  finite = _all_finite(grads_up)
  pre_norm = _global_norm(grads_up)
  post_norm = _global_norm(clipped_up)
  cosine = _cosine(clipped_up, grads_up)
  cosine = jnp.where(finite, cosine, jnp.nan)
  return ClipResult(clipped, pre_norm, post_norm, cosine, finite)


def _transform(method: str, threshold: Any) -> optax.GradientTransformation:
  """The clip, computed in the compute dtype and cast back leaf by leaf.

  Stateless, so the threshold is cast to the gradient's compute dtype per
  call.
  """
  if method == "none":
    return optax.identity()

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    dtype = _compute_dtype("updates", updates)
    if not _validation.is_traced(threshold):
      _check_threshold(threshold, dtype)
    c = jnp.asarray(threshold).astype(dtype)
    up = _cast(updates, dtype)
    if method == "value":
      clipped = jax.tree.map(lambda u: jnp.clip(u, -c, c), up)
    elif method == "norm":
      clipped = _clip_by_global_norm(up, c)
    elif method == "block_rms":
      clipped = jax.tree.map(lambda u: _clip_by_global_norm(u, c, rms=True),
                             up)
    else:
      if params is None:
        raise ValueError("params is required for method='adaptive'")
      inner = optax.adaptive_grad_clip(c)
      clipped, _ = inner.update(up, inner.init(up), _cast(params, dtype))
    clipped = jax.tree.map(lambda x, u: x.astype(jnp.result_type(u)),
                           clipped, updates)
    return clipped, state

  return optax.GradientTransformation(init_fn, update_fn)


def _clip_by_global_norm(tree: Any, c: jax.Array, rms: bool = False) -> Any:
  """``optax.clip_by_global_norm`` (RMS instead of norm: ``clip_by_block_rms``
  on one leaf), safe over the whole float range.

  ``g * c / ||g||`` is formed as ``(g / s) * (c / ||g / s||)`` with ``s`` a
  power of two and ``max |g / s|`` in ``[1, 4)``, so ``||g / s|| >= 1``
  and ``c / ||g / s|| <= c``; a NaN norm clips (to NaN), as in optax.
  """
  _, inv = _power_of_two_scale(tree)
  scaled = jax.tree.map(lambda x: x * inv, tree)
  if rms:
    n = jnp.sqrt(jnp.mean(jnp.square(scaled)))
  else:
    n = optax.tree.norm(scaled)
  trigger = ~(n <= c * inv)
  factor = c / jnp.where(trigger, n, 1)   # no inf/NaN in the branch not taken
  return jax.tree.map(lambda x, u: jnp.where(trigger, u * factor, x),
                      tree, scaled)


def _compute_dtype(name: str, tree: Any) -> jnp.dtype:
  """The promoted float dtype of ``tree``'s leaves and float32.

  Raises ``TypeError`` naming the first leaf that is not a real float.
  """
  dtypes = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f"{name} must hold real float arrays (float16, bfloat16, float32 "
          f"or float64); leaf {jax.tree_util.keystr(path) or '(root)'} has "
          f"dtype {dtype}")
    dtypes.append(dtype)
  return jnp.dtype(jnp.result_type(*dtypes, jnp.float32))


def _check_threshold(threshold: Any, dtype: Any) -> None:
  """``threshold`` must be finite and >= the smallest normal of ``dtype``
  (subnormals flush to zero on CPU and GPU)."""
  if _validation.is_traced(threshold):
    return
  value = float(threshold)
  info = jnp.finfo(dtype)
  # Compare in float64: casting 1e39 to float32 would warn and give inf.
  if not float(info.tiny) <= value <= float(info.max):
    raise ValueError(
        f"threshold must be finite and > 0 in {jnp.dtype(dtype).name}, the "
        f"dtype the clip computes in: between {float(info.tiny):.4g} and "
        f"{float(info.max):.4g}, got {threshold!r}")


def _check_params(params: Any, grads: Any) -> None:
  if params is None:
    raise ValueError("params is required for method='adaptive'")
  p_def, g_def = jax.tree.structure(params), jax.tree.structure(grads)
  if p_def != g_def:
    raise ValueError(f"params must be a pytree shaped like grads; got "
                     f"{p_def} for grads {g_def}")
  for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads)):
    if jnp.shape(p) != jnp.shape(g):
      raise ValueError(f"params must be shaped like grads; got a leaf of "
                       f"shape {jnp.shape(p)} for one of {jnp.shape(g)}")


def _cast(tree: Any, dtype: Any) -> Any:
  return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def _max_abs(tree: Any) -> jax.Array:
  """``max |x|`` over every entry; 0 for a tree of empty leaves."""
  return jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0)
                            for x in jax.tree.leaves(tree)]))


def _power_of_two_scale(tree: Any) -> tuple[jax.Array, jax.Array]:
  """``(s, 1 / s)``, ``s = 2**(e - 1)`` where ``max |x| = m 2**e``, ``m`` in
  ``[0.5, 1)``; ``(1, 1)`` for a zero or non-finite tree.

  Callers multiply by ``1 / s`` rather than divide by ``s``: XLA on CPU
  turns a division by a scalar into a product with its reciprocal, which
  flushes to zero when subnormal (``1 / 3e38`` in float32). So ``e - 1`` is
  clipped to ``[minexp, -minexp]`` (``[-126, 126]`` in float32), where both
  ``s`` and ``1 / s`` are normal; ``max |x / s|`` is then below 4.
  """
  big = _max_abs(tree)
  info = jnp.finfo(big.dtype)
  _, exponent = jnp.frexp(big)
  usable = jnp.isfinite(big) & (big > 0)
  k = jnp.where(usable, jnp.clip(exponent - 1, info.minexp, -info.minexp), 0)
  one = jnp.ones((), big.dtype)
  return jnp.ldexp(one, k), jnp.ldexp(one, -k)


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                            for x in jax.tree.leaves(tree)]))


def _global_norm(tree: Any) -> jax.Array:
  """L2 norm over all leaves (one dtype), scaled by a power of two so the
  sum of squares cannot overflow.

  Non-finite trees get optax's unscaled norm: ``inf`` or ``NaN``, as the
  raw values warrant.
  """
  scale, inv = _power_of_two_scale(tree)
  norm = scale * optax.tree.norm(jax.tree.map(lambda x: x * inv, tree))
  return jnp.where(_all_finite(tree), norm, optax.tree.norm(tree))


def _cosine(a: Any, b: Any) -> jax.Array:
  """Cosine between two trees of one dtype."""

  def unit(tree):
    _, inv = _power_of_two_scale(tree)
    tree = jax.tree.map(lambda x: x * inv, tree)
    return tree, optax.tree.norm(tree)

  (ua, na), (ub, nb) = unit(a), unit(b)
  dot = optax.tree.vdot(ua, ub)
  # A zero vector gives 0/0 = NaN here; keep it NaN, not a number.
  return dot / (na * nb)
