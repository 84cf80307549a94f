"""Mean-field signal propagation: q*, chi_1, the critical line, depth scales.

A wide layer ``h' = phi(z)``, ``z = W h + b``, ``W_ij ~ N(0, sigma_w2 / n)``,
``b_i ~ N(0, sigma_b2)``, maps the per-unit pre-activation variance by

  q' = V(q) = sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2,    z ~ N(0, 1),

(Poole et al. 2016, eq. 3) and multiplies squared gradient norms by

  chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]

at the fixed point ``q* = V(q*)`` (Schoenholz et al. 2017, eq. 6). Gradients
vanish for ``chi_1 < 1`` and explode for ``chi_1 > 1``. Gaussian expectations
use 101-point Gauss-Hermite quadrature in float64 numpy; ReLU, linear,
hard-tanh and erf use closed forms.

References:
  Poole, Lahiri, Raghu, Sohl-Dickstein, Ganguli. Exponential expressivity in
  deep neural networks through transient chaos. NeurIPS 2016.
  Schoenholz, Gilmer, Ganguli, Sohl-Dickstein. Deep information propagation.
  ICLR 2017.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from exploding.activations import Activation, activation as _lookup

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(101)
_WEIGHTS = _WEIGHTS / math.sqrt(2.0 * math.pi)  # sum to 1: E under N(0, 1)
_NODES2, _WEIGHTS2 = np.polynomial.hermite_e.hermegauss(61)
_WEIGHTS2 = _WEIGHTS2 / math.sqrt(2.0 * math.pi)
_BISECTION_STEPS = 100


def resolve(act: str | Activation) -> Activation:
  """Looks up ``act`` (a name or an ``Activation``)."""
  return _lookup(act)


def as_float(name: str, value, *, positive: bool = False) -> np.ndarray:
  """``value`` as a float64 array; ValueError naming ``name`` if out of range."""
  arr = np.asarray(value, dtype=np.float64)
  bad = ~np.isfinite(arr) | ((arr <= 0) if positive else (arr < 0))
  if np.any(bad):
    rng = "> 0" if positive else ">= 0"
    raise ValueError(f"{name} must be finite and {rng}, got {value!r}")
  return arr


def _scalar(x):
  x = np.asarray(x, dtype=np.float64)
  return float(x) if x.ndim == 0 else x


@functools.lru_cache(maxsize=None)
def _jax_derivatives(fn):
  d1 = jax.grad(fn)
  d2 = jax.grad(d1)
  return (jax.jit(jnp.vectorize(fn)), jax.jit(jnp.vectorize(d1)),
          jax.jit(jnp.vectorize(d2)))


def derivatives(act: Activation, x: np.ndarray, order: int) -> np.ndarray:
  """``phi^(order)(x)`` in float64 for ``order`` in 0, 1, 2; ``x`` any shape."""
  x = np.asarray(x, dtype=np.float64)
  if act.name == "tanh":
    t = np.tanh(x)
    return (t, 1.0 - t * t, -2.0 * t * (1.0 - t * t))[order]
  if act.name == "sigmoid":
    s = 0.5 * (1.0 + np.tanh(0.5 * x))
    return (s, s * (1.0 - s), s * (1.0 - s) * (1.0 - 2.0 * s))[order]
  if act.name == "relu":
    return (np.maximum(x, 0.0), (x > 0).astype(np.float64),
            np.zeros_like(x))[order]
  if act.name == "linear":
    return (x, np.ones_like(x), np.zeros_like(x))[order]
  if act.name == "hard_tanh":
    inside = (np.abs(x) < 1).astype(np.float64)
    return (np.clip(x, -1.0, 1.0), inside, np.zeros_like(x))[order]
  with jax.enable_x64(True):  # erf and user activations: autodiff in float64
    out = _jax_derivatives(act.fn)[order](jnp.asarray(x, jnp.float64))
    return np.asarray(out, dtype=np.float64)


def _quad(act: Activation, q: np.ndarray, kind: str) -> np.ndarray:
  """A moment of phi at variance q by 101-point Gauss-Hermite."""
  x = np.sqrt(q)[..., None] * _NODES
  if kind == "phi2":
    f = derivatives(act, x, 0)**2
  elif kind == "dphi2":
    f = derivatives(act, x, 1)**2
  elif kind == "dphi4":
    f = derivatives(act, x, 1)**4
  else:
    f = derivatives(act, x, 1)**2 + (derivatives(act, x, 0) *
                                     derivatives(act, x, 2))
  return np.sum(f * _WEIGHTS, axis=-1)


def moment(act: Activation, q: np.ndarray, kind: str) -> np.ndarray:
  """Gaussian moments at variance ``q`` (float64, any shape, finite, >= 0).

  ``kind``: ``"phi2"`` E[phi^2], ``"dphi2"`` E[phi'^2], ``"dphi4"`` E[phi'^4],
  ``"dv"`` d/dq E[phi(sqrt(q) z)^2] = E[phi'^2 + phi phi''] (Stein's lemma;
  Schoenholz et al. 2017, eq. 4).
  """
  q = np.asarray(q, dtype=np.float64)
  if act.name in ("relu", "linear"):
    c = 0.5 if act.name == "relu" else 1.0
    return q * c if kind == "phi2" else np.full_like(q, c)
  if act.name == "hard_tanh":
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
      a = 1.0 / np.sqrt(q)
      p_in = np.vectorize(math.erf, otypes=[float])(a / math.sqrt(2.0))
      a_pdf = np.where(np.isinf(a), 0.0, a * np.exp(-0.5 * a * a))
    inner = p_in - 2.0 * a_pdf / math.sqrt(2.0 * math.pi)  # E[z^2; |z|<a]
    if kind == "phi2":
      return q * inner + (1.0 - p_in)
    return inner if kind == "dv" else p_in
  if act.name == "erf":
    if kind == "phi2":
      return 2.0 / math.pi * np.arcsin(2.0 * q / (1.0 + 2.0 * q))
    if kind == "dphi2":
      return 4.0 / math.pi / np.sqrt(1.0 + 4.0 * q)
    if kind == "dphi4":
      return 16.0 / math.pi**2 / np.sqrt(1.0 + 8.0 * q)
    return 4.0 / (math.pi * (1.0 + 2.0 * q) * np.sqrt(1.0 + 4.0 * q))
  return _quad(act, q, kind)


def q_star(activation, sigma_w2, sigma_b2):
  """Fixed point q* of the variance map ``q -> sigma_w2 E[phi^2] + sigma_b2``.

  ReLU and linear maps are affine in q: ``q* = sigma_b2 / (1 - chi_1)`` when
  ``chi_1 < 1``, ``inf`` when ``chi_1 > 1`` or when ``chi_1 = 1`` with
  ``sigma_b2 > 0`` (q grows without bound), and ``nan`` for ``chi_1 = 1``,
  ``sigma_b2 = 0`` (every q is a fixed point). Otherwise q* is the root of
  ``V(q) - q`` found by bisection on ``[0, hi]``; the built-in maps are
  increasing and concave, so it is the unique stable fixed point (0 for tanh
  with ``sigma_b2 = 0``, ``sigma_w2 <= 1``).

  Args:
    activation: a name (``"tanh"``, ...) or an ``Activation``.
    sigma_w2: weight variance sigma_w^2 > 0; float or float array.
    sigma_b2: bias variance sigma_b^2 >= 0; broadcasts with ``sigma_w2``.

  Returns:
    q*, a float, or a float64 array of the broadcast shape.

  References:
    Poole et al. 2016, eq. 3; Schoenholz et al. 2017, eq. 3.

  Example:
    >>> round(q_star("relu", 1.0, 0.5), 6)
    1.0
  """
  act = resolve(activation)
  sw, sb = np.broadcast_arrays(as_float("sigma_w2", sigma_w2, positive=True),
                               as_float("sigma_b2", sigma_b2))
  if act.name in ("relu", "linear"):
    slope = sw * (0.5 if act.name == "relu" else 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
      q = np.where(slope < 1, sb / (1.0 - slope), np.inf)
    return _scalar(np.where((slope == 1) & (sb == 0), np.nan, q))

  def excess(q):  # V(q) - q
    return sw * moment(act, q, "phi2") + sb - q

  hi = np.broadcast_to(1.0 + 2.0 * (sw + sb), sw.shape).copy()
  for _ in range(60):  # grow hi until V(hi) < hi (bounded phi: at once)
    grow = excess(hi) >= 0
    if not np.any(grow):
      break
    hi = np.where(grow, 4.0 * hi, hi)
  lo = np.zeros_like(hi)
  for _ in range(_BISECTION_STEPS):
    mid = 0.5 * (lo + hi)
    up = excess(mid) >= 0
    lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
  q = np.where(lo == 0, 0.0, 0.5 * (lo + hi))
  return _scalar(np.where(excess(hi) >= 0, np.inf, q))


def chi1(activation, sigma_w2, sigma_b2):
  """Per-layer growth factor of squared gradient norms, at q*.

  ``chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]``: exactly ``sigma_w2 / 2`` for
  ReLU and ``sigma_w2`` for linear (for every q, so also where q* is
  infinite), ``sigma_w2 phi'(0)^2`` where ``q* = 0``.

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    sigma_b2: bias variance >= 0; broadcasts with ``sigma_w2``.

  Returns:
    chi_1, a float or float64 array of the broadcast shape.

  References:
    Schoenholz et al. 2017, eq. 6; Poole et al. 2016, eq. 7.

  Example:
    >>> chi1("relu", 2.0, 0.1)
    1.0
  """
  act = resolve(activation)
  sw, sb = np.broadcast_arrays(as_float("sigma_w2", sigma_w2, positive=True),
                               as_float("sigma_b2", sigma_b2))
  if act.name in ("relu", "linear"):
    return _scalar(sw * (0.5 if act.name == "relu" else 1.0))
  q = np.asarray(q_star(act, sw, sb))
  finite = np.isfinite(q)
  out = sw * moment(act, np.where(finite, q, 0.0), "dphi2")
  return _scalar(np.where(finite, out, np.nan))


def critical_sigma_w2(activation, sigma_b2=0.0):
  """The weight variance on the edge of chaos, where ``chi_1 = 1``.

  Exactly 2 for ReLU and 1 for linear, and ``1 / phi'(0)^2`` for the odd
  saturating tanh, erf and hard-tanh at ``sigma_b2 = 0`` (q* = 0 up to
  there; chi_1 - 1 is quadratic in the distance, so bisection alone would
  only resolve it to ~1e-8). Otherwise bisection in ``log sigma_w2`` over
  ``[1e-8, 1e8]`` (``nan`` if chi_1 never reaches 1).

  Args:
    activation: a name or an ``Activation``.
    sigma_b2: bias variance >= 0; float or float array.

  Returns:
    sigma_w^2 at criticality, float or float64 array shaped like ``sigma_b2``.

  References:
    Schoenholz et al. 2017, Section 3 and Fig. 1; Poole et al. 2016, Fig. 3.

  Example:
    >>> round(critical_sigma_w2("tanh", 0.0), 6)
    1.0
  """
  act = resolve(activation)
  sb = as_float("sigma_b2", sigma_b2)
  if act.name in ("relu", "linear"):
    return _scalar(np.full_like(sb, 2.0 if act.name == "relu" else 1.0))
  lo = np.full_like(sb, math.log(1e-8))
  hi = np.full_like(sb, math.log(1e8))
  never = np.asarray(chi1(act, np.exp(hi), sb)) < 1
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    above = np.asarray(chi1(act, np.exp(mid), sb)) >= 1
    lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
  out = np.where(never, np.nan, np.exp(0.5 * (lo + hi)))
  if act.name in ("tanh", "erf", "hard_tanh"):
    out = np.where(sb == 0, 1.0 / act.gamma**2, out)  # gamma = phi'(0)
  return _scalar(out)


def depth_scale_q(activation, sigma_w2, sigma_b2):
  """Depth over which q relaxes to q*: ``xi_q = -1 / log V'(q*)``.

  ``V'(q*) = chi_1 + sigma_w2 E[phi'' phi]`` at q* (Schoenholz et al. 2017,
  eq. 4). ``inf`` where ``V'(q*) >= 1`` (q does not converge geometrically).

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    sigma_b2: bias variance >= 0; broadcasts with ``sigma_w2``.

  Returns:
    xi_q in layers, float or float64 array.

  References:
    Schoenholz et al. 2017, eq. 4.
  """
  act = resolve(activation)
  sw, sb = np.broadcast_arrays(as_float("sigma_w2", sigma_w2, positive=True),
                               as_float("sigma_b2", sigma_b2))
  q = np.asarray(q_star(act, sw, sb))
  slope = sw * moment(act, np.where(np.isfinite(q), q, 0.0), "dv")
  with np.errstate(divide="ignore"):
    xi = np.where(slope < 1, -1.0 / np.log(np.minimum(slope, 1.0)), np.inf)
  return _scalar(np.where(slope <= 0, 0.0, xi))


def _pair(act, q, c):
  """(phi(u1), phi(u2), phi'(u1), phi'(u2)) on the 61x61 grid, corr c."""
  z1, z2 = _NODES2[:, None], _NODES2[None, :]
  s = np.sqrt(q)[..., None, None]
  c = c[..., None, None]
  u1 = s * z1
  u2 = s * (c * z1 + np.sqrt(np.maximum(1.0 - c * c, 0.0)) * z2)
  return (derivatives(act, u1, 0), derivatives(act, u2, 0),
          derivatives(act, u1, 1), derivatives(act, u2, 1))


def _expect2(values):
  return np.einsum("...ij,i,j->...", values, _WEIGHTS2, _WEIGHTS2)


def c_star(activation, sigma_w2, sigma_b2):
  """Fixed point c* of the correlation map between two inputs.

  ``c' = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*`` with ``(u1, u2)``
  Gaussian, variances q*, correlation c (Schoenholz et al. 2017, eq. 5).
  ``c* = 1`` in the ordered phase (``chi_1 <= 1``), and for ReLU and linear
  everywhere (their normalised correlation map only ever approaches 1);
  ``c* < 1`` in the chaotic phase, by bisection with 61x61-point quadrature.

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    sigma_b2: bias variance >= 0; broadcasts with ``sigma_w2``.

  Returns:
    c* in [0, 1], float or float64 array.

  References:
    Schoenholz et al. 2017, eq. 5; Poole et al. 2016, eq. 5.
  """
  act = resolve(activation)
  sw, sb = np.broadcast_arrays(as_float("sigma_w2", sigma_w2, positive=True),
                               as_float("sigma_b2", sigma_b2))
  if act.name in ("relu", "linear"):
    return _scalar(np.ones_like(sw))
  q = np.asarray(q_star(act, sw, sb))
  chaotic = np.asarray(chi1(act, sw, sb)) > 1
  qc = np.where(chaotic, q, 1.0)

  def excess(c):
    p1, p2, _, _ = _pair(act, qc, c)
    return (sw * _expect2(p1 * p2) + sb) / qc - c

  lo, hi = np.zeros_like(sw), np.full_like(sw, 1.0 - 1e-9)
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    up = excess(mid) >= 0
    lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
  return _scalar(np.where(chaotic, np.where(lo == 0, 0.0, 0.5 * (lo + hi)),
                          1.0))


def depth_scale_c(activation, sigma_w2, sigma_b2):
  """Depth over which input correlations relax: ``xi_c = -1 / log chi_c``.

  ``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]`` at c* (Schoenholz et al. 2017,
  eq. 8); ``chi_c = chi_1`` in the ordered phase, so ``xi_c = -1/log chi_1``
  there, and ``xi_c = inf`` on the critical line. For ReLU and linear (c* = 1)
  it is ``-1/log chi_1`` for ``chi_1 < 1`` and ``inf`` otherwise.

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    sigma_b2: bias variance >= 0; broadcasts with ``sigma_w2``.

  Returns:
    xi_c in layers, float or float64 array.

  References:
    Schoenholz et al. 2017, eqs. 8-9.
  """
  act = resolve(activation)
  sw, sb = np.broadcast_arrays(as_float("sigma_w2", sigma_w2, positive=True),
                               as_float("sigma_b2", sigma_b2))
  chi = np.asarray(chi1(act, sw, sb), dtype=np.float64)
  if act.name not in ("relu", "linear") and np.any(chi > 1):
    c = np.asarray(c_star(act, sw, sb))
    q = np.asarray(q_star(act, sw, sb))
    _, _, d1, d2 = _pair(act, np.where(chi > 1, q, 1.0), c)
    chi = np.where(chi > 1, sw * _expect2(d1 * d2), chi)
  with np.errstate(divide="ignore"):
    return _scalar(np.where(chi < 1, -1.0 / np.log(np.minimum(chi, 1.0)),
                            np.inf))
