"""Gaussian expectations of activations, accurate at any variance.

``moment(act, q, kind)`` is ``E[g(sqrt(q) z)]``, ``z ~ N(0, 1)``, for g one
of ``phi^2``, ``phi'^2``, ``phi'^4``, ``phi'^2 + phi phi''``. ReLU, linear,
hard-tanh and erf have closed forms (erf: the arcsine kernel, Williams
1997). Other activations are integrated numerically, and ``E[f(m + s z)]``
has two length scales: the Gaussian's, s in ``u = m + s z``, and the
activation's, about 1 around ``u = 0`` (tanh has poles at ``+-i pi/2``). A
fixed Gauss-Hermite rule in z resolves only the first: once s is large,
``tanh'(s z)^2`` is narrower than its node spacing (101 nodes: +33% at
``s^2 = 30``, +134% at 100).

Here z runs over ``[-9, 9]`` (the rest holds 2e-19 of the mass), cut into
panels, each integrated by 12-point Gauss-Legendre: panels of width 1.5
where only the Gaussian varies, and, around the z where ``u = 0``, panels
graded geometrically by a factor <= 2 from one unit of u (``1 / s`` in z)
up to 1.5. A panel ``[x, 2x]`` in u keeps the poles at ``+-i pi/2``
outside its Bernstein ellipse of parameter ``3 + sqrt(8) ~ 5.8``, so its
error is ~5.8^-24 (Trefethen 2013, Thm 19.3). Measured: ~1e-15 relative
against closed forms (erf, ReLU, hard-tanh) up to ``s = 1e7`` and against
30-digit references (tanh, sigmoid) up to ``s = 1e3``. The u in
``{-1, 0, 1}`` are panel edges, so activations with kinks there (ReLU,
hard-tanh) are exact too. Activations should be analytic elsewhere and
grow at most polynomially; oscillating ones (``sin``) are not resolved at
large s.

References:
  Trefethen. Approximation Theory and Approximation Practice. SIAM 2013,
  ch. 19 (Gauss quadrature of analytic functions: error ~ rho^(-2n)).
  Davis, Rabinowitz. Methods of Numerical Integration. 2nd ed., Academic
  Press 1984, Section 2.7 (compound rules on graded meshes).
  Williams. Computing with infinite networks. NeurIPS 1997 (the erf
  kernel).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from exploding.activations import Activation

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(12)
_Z_MAX = 9.0  # P(|z| > 9) = 2.3e-19
_WIDTH = 1.5  # panel width in z where only the Gaussian varies
_UNIFORM = np.linspace(-_Z_MAX, _Z_MAX, int(round(2 * _Z_MAX / _WIDTH)) + 1)
_KINKS = (-1.0, 0.0, 1.0)  # u of the kinks of ReLU and hard-tanh
_PAIR_CHUNK = 1 << 22  # inner nodes per chunk of expect_pair (32 MiB)


def derivatives(act: Activation, x: np.ndarray, order: int) -> np.ndarray:
  """``phi^(order)(x)`` in float64 for ``order`` in 0, 1, 2; ``x`` any shape."""
  x = np.asarray(x, dtype=np.float64)
  # sech and sigmoid' from exp(-|x|): no cancellation in 1 - tanh^2 at large
  # |x| (relative error ~1e-8 at x = 10 otherwise) and no overflow.
  if act.name == "tanh":
    t, e = np.tanh(x), np.exp(-2.0 * np.abs(x))
    sech2 = 4.0 * e / (1.0 + e)**2
    return (t, sech2, -2.0 * t * sech2)[order]
  if act.name == "sigmoid":
    e = np.exp(-np.abs(x))
    s = np.where(x >= 0, 1.0, e) / (1.0 + e)
    ds = e / (1.0 + e)**2
    return (s, ds, -ds * np.tanh(0.5 * x))[order]
  if act.name == "relu":
    return (np.maximum(x, 0.0), (x > 0).astype(np.float64),
            np.zeros_like(x))[order]
  if act.name == "linear":
    return (x, np.ones_like(x), np.zeros_like(x))[order]
  if act.name == "hard_tanh":
    inside = (np.abs(x) < 1).astype(np.float64)
    return (np.clip(x, -1.0, 1.0), inside, np.zeros_like(x))[order]
  # User activations: autodiff in float64, padded to a power-of-two length
  # so the shrinking sets of a root search reuse a few compiled shapes.
  flat = x.reshape(-1)
  padded = np.zeros(max(1024, 1 << (flat.size - 1).bit_length()))
  padded[:flat.size] = flat
  with jax.enable_x64(True):
    out = _jax_derivatives(act.fn)[order](jnp.asarray(padded, jnp.float64))
  return np.asarray(out, dtype=np.float64)[:flat.size].reshape(x.shape)


def moment(act: Activation, q: np.ndarray, kind: str) -> np.ndarray:
  """Gaussian moments at variance ``q`` (float64, any shape, finite, >= 0).

  ``kind``: ``"phi2"`` E[phi^2], ``"dphi2"`` E[phi'^2], ``"dphi4"`` E[phi'^4],
  ``"dv"`` d/dq E[phi(sqrt(q) z)^2] = E[phi'^2 + phi phi''] (Stein's lemma;
  Schoenholz et al. 2017, eq. 4).
  """
  return moments(act, q, (kind,))[0]


def moments(act: Activation, q: np.ndarray,
            kinds: tuple[str, ...]) -> tuple[np.ndarray, ...]:
  """Several of ``moment``'s kinds at once, from one set of nodes."""
  q = np.asarray(q, dtype=np.float64)
  if act.name in ("relu", "linear", "hard_tanh", "erf"):
    return tuple(_closed_form(act, q, kind) for kind in kinds)
  u, w = gaussian_rule(0.0, np.sqrt(q))
  cache = {}

  def d(order):
    if order not in cache:
      cache[order] = derivatives(act, u, order)
    return cache[order]

  integrands = {"phi2": lambda: d(0)**2, "dphi2": lambda: d(1)**2,
                "dphi4": lambda: d(1)**4,
                "dv": lambda: d(1)**2 + d(0) * d(2)}
  return tuple(np.sum(integrands[kind]() * w, axis=-1) for kind in kinds)


def gaussian_rule(mean, std) -> tuple[np.ndarray, np.ndarray]:
  """Nodes u and weights w with ``sum w f(u) = E[f(mean + std z)]``.

  Args:
    mean: the Gaussian's mean m; float64 array of any shape.
    std: its standard deviation s >= 0 (finite); broadcasts with ``mean``.
      ``s = 0`` gives ``f(m)`` (times 1 - 2e-19).

  Returns:
    ``(u, w)``, float64 arrays of shape ``broadcast + (n,)``; n grows with
    ``log2(max s)``: 228 nodes for ``s <= 1``, 300 at 10, 468 at 1e3.
  """
  mean, std = np.broadcast_arrays(np.asarray(mean, dtype=np.float64),
                                  np.asarray(std, dtype=np.float64))
  safe = np.where(std > 0, std, 1.0)
  # z of the kinks, and the finest panel there: one unit of u, <= _WIDTH.
  kinks = [np.where(std > 0, (k - mean) / safe, 0.0) for k in _KINKS]
  fine = np.where(std > 0, np.minimum(_WIDTH, 1.0 / safe), _WIDTH)
  finest = float(np.min(fine, initial=_WIDTH))
  levels = max(1, math.ceil(math.log2(_WIDTH / finest)))
  ratio = (_WIDTH / fine)**(1.0 / levels)  # <= 2 between graded edges
  offsets = fine[..., None] * ratio[..., None]**np.arange(levels + 1)
  centre = kinks[1][..., None]
  edges = np.concatenate(
      [np.broadcast_to(_UNIFORM, mean.shape + _UNIFORM.shape)]
      + [k[..., None] for k in kinks] + [centre - offsets, centre + offsets],
      axis=-1)
  edges = np.sort(np.clip(edges, -_Z_MAX, _Z_MAX), axis=-1)
  half = 0.5 * np.diff(edges, axis=-1)[..., None]  # (..., panels, 1)
  z = 0.5 * (edges[..., 1:] + edges[..., :-1])[..., None] + half * _GL_NODES
  w = half * _GL_WEIGHTS * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
  shape = mean.shape + (-1,)
  u = mean[..., None] + std[..., None] * z.reshape(shape)
  return u, w.reshape(shape)


def expect_pair(fs: Sequence[Callable[[np.ndarray], np.ndarray]], q,
                c) -> tuple[np.ndarray, ...]:
  """``E[f(u1) f(u2)]`` for each f, ``(u1, u2)`` Gaussian with variances q.

  Iterated: given u1, u2 is Gaussian with mean ``c u1`` and variance
  ``q (1 - c^2)``, so the inner expectation is a ``gaussian_rule`` at that
  mean and variance, at every node of the outer rule for u1. Chunked over
  the broadcast elements to bound memory.

  Args:
    fs: functions mapping a float64 array to one of the same shape,
      integrated on the same nodes.
    q: variance >= 0; float64 array.
    c: correlation in [-1, 1]; broadcasts with ``q``.

  Returns:
    One expectation per f, float64 arrays of the broadcast shape.
  """
  q, c = np.broadcast_arrays(np.asarray(q, dtype=np.float64),
                             np.asarray(c, dtype=np.float64))
  flat_c = c.reshape(-1)
  s = np.sqrt(q.reshape(-1))
  s_cond = s * np.sqrt(np.maximum(1.0 - flat_c * flat_c, 0.0))
  u1, w1 = gaussian_rule(np.zeros_like(s), s)
  outer = [w1 * f(u1) for f in fs]
  out = np.empty((len(fs), s.size))
  per = max(1, _PAIR_CHUNK // u1.shape[-1]**2)  # elements per chunk
  for i in range(0, s.size, per):
    sl = slice(i, i + per)
    u2, w2 = gaussian_rule(flat_c[sl, None] * u1[sl], s_cond[sl, None])
    for k, f in enumerate(fs):
      out[k, sl] = np.sum(outer[k][sl] * np.sum(f(u2) * w2, axis=-1), axis=-1)
  return tuple(o.reshape(q.shape) for o in out)


@functools.lru_cache(maxsize=None)
def _jax_derivatives(fn):
  d1 = jax.grad(fn)
  d2 = jax.grad(d1)
  return (jax.jit(jnp.vectorize(fn)), jax.jit(jnp.vectorize(d1)),
          jax.jit(jnp.vectorize(d2)))


def _closed_form(act: Activation, q: np.ndarray, kind: str) -> np.ndarray:
  """``moment`` for ReLU, linear, hard-tanh and erf (arcsine kernel)."""
  if act.name in ("relu", "linear"):
    c = 0.5 if act.name == "relu" else 1.0
    return q * c if kind == "phi2" else np.full_like(q, c)
  if act.name == "hard_tanh":
    return _hard_tanh_moment(q, kind)
  if kind == "phi2":  # (2/pi) arcsin(2q / (1 + 2q)) without arcsin's
    # ill-conditioning near 1 (relative error ~1e-10 at q = 1e12 otherwise)
    return 2.0 / math.pi * np.arctan(2.0 * q / np.sqrt(1.0 + 4.0 * q))
  if kind == "dphi2":
    return 4.0 / math.pi / np.sqrt(1.0 + 4.0 * q)
  if kind == "dphi4":
    return 16.0 / math.pi**2 / np.sqrt(1.0 + 8.0 * q)
  return 4.0 / (math.pi * (1.0 + 2.0 * q) * np.sqrt(1.0 + 4.0 * q))


def _hard_tanh_moment(q: np.ndarray, kind: str) -> np.ndarray:
  """Hard-tanh moments from the normal CDF and pdf at ``a = 1 / sqrt(q)``.

  ``E[phi'^2] = P(|z| < a)``, ``E[phi^2] = q E[z^2; |z| < a] + P(|z| > a)``
  and ``d/dq E[phi^2] = E[z^2; |z| < a]``. Below ``a = 1`` (q > 1) the last
  is summed as its series, where ``P(|z| < a) - 2 a pdf(a)`` would cancel
  (relative error ~1e-16 / a^2).
  """
  with np.errstate(divide="ignore"):
    a = 1.0 / np.sqrt(q)
  p_in = np.vectorize(math.erf, otypes=[float])(a / math.sqrt(2.0))
  if kind in ("dphi2", "dphi4"):
    return p_in
  with np.errstate(invalid="ignore", over="ignore"):
    a_pdf = np.where(np.isinf(a), 0.0, a * np.exp(-0.5 * a * a))
  inner = p_in - math.sqrt(2.0 / math.pi) * a_pdf
  small = np.minimum(a, 1.0)  # 2 pdf(0) sum_k (-a^2/2)^k a^3 / (k! (2k+3))
  series = sum((-0.5 * small * small)**k / (math.factorial(k) * (2 * k + 3))
               for k in range(20))
  inner = np.where(a < 1, math.sqrt(2.0 / math.pi) * small**3 * series,
                   inner)
  if kind == "dv":
    return inner
  p_out = np.vectorize(math.erfc, otypes=[float])(a / math.sqrt(2.0))
  return q * inner + p_out
