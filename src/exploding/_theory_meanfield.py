"""Mean-field signal propagation: q*, chi_1, the critical line, depth scales.

A wide layer ``h' = phi(z)``, ``z = W h + b``, ``W_ij ~ N(0, sigma_w2 / n)``,
``b_i ~ N(0, sigma_b2)``, maps the per-unit pre-activation variance by

  q' = V(q) = sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2,    z ~ N(0, 1),

(Poole et al. 2016, eq. 3) and multiplies squared gradient norms by

  chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]

at the fixed point ``q* = V(q*)`` (Schoenholz et al. 2017, eq. 6). Gradients
vanish for ``chi_1 < 1`` and explode for ``chi_1 > 1``. ReLU, linear,
hard-tanh and erf use closed forms; other Gaussian expectations use
composite Gauss-Legendre panels fitted to both ``sqrt(q)`` and the
activation's own scale (``_theory_gaussian``), accurate to ~1e-13 at any
q (a fixed Gauss-Hermite rule is not once ``sqrt(q)`` is a few units).

References:
  Poole, Lahiri, Raghu, Sohl-Dickstein, Ganguli. Exponential expressivity in
  deep neural networks through transient chaos. NeurIPS 2016.
  Schoenholz, Gilmer, Ganguli, Sohl-Dickstein. Deep information propagation.
  ICLR 2017.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from exploding._theory_gaussian import derivatives
from exploding._theory_gaussian import expect_pair
from exploding._theory_gaussian import moment
from exploding._theory_gaussian import moments
from exploding.activations import Activation, activation as _lookup

_ROOT_STEPS = 100  # Newton or bisection steps for q*
_EPS = float(np.finfo(np.float64).eps)


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


def q_star(activation, sigma_w2, sigma_b2):
  """Fixed point q* of the variance map ``q -> sigma_w2 E[phi^2] + sigma_b2``.

  ReLU and linear maps are affine in q: ``q* = sigma_b2 / (1 - chi_1)`` when
  ``chi_1 < 1``, ``inf`` when ``chi_1 > 1`` or when ``chi_1 = 1`` with
  ``sigma_b2 > 0`` (q grows without bound), and ``nan`` for ``chi_1 = 1``,
  ``sigma_b2 = 0`` (every q is a fixed point). Otherwise q* is the root of
  ``V(q) - q`` in ``[0, hi]`` by Newton's method (slope ``V'(q)`` by Stein's
  lemma) safeguarded by bisection; the built-in maps are
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
  shape = sw.shape
  sw, sb = sw.ravel(), sb.ravel()

  def excess(q, at=slice(None)):  # V(q) - q and its slope, at elements ``at``
    v, dv = moments(act, q, ("phi2", "dv"))
    return sw[at] * v + sb[at] - q, sw[at] * dv - 1.0

  hi = 1.0 + 2.0 * (sw + sb)
  for _ in range(60):  # grow hi until V(hi) < hi (bounded phi: at once)
    unbounded = excess(hi)[0] >= 0
    if not np.any(unbounded):
      break
    hi = np.where(unbounded, 4.0 * hi, hi)
  # As bisection did: q* = 0 once V(q) < q at q = hi 2^-100 (and every q
  # tried above it).
  q = _root(excess, np.zeros_like(hi), hi, _ROOT_STEPS, hi * 2.0**-100)
  return _scalar(np.where(unbounded, np.inf, q).reshape(shape))


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


def c_star(activation, sigma_w2, sigma_b2):
  """Fixed point c* of the correlation map between two inputs.

  ``c' = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*`` with ``(u1, u2)``
  Gaussian, variances q*, correlation c (Schoenholz et al. 2017, eq. 5).
  ``c* = 1`` in the ordered phase (``chi_1 <= 1``), and for ReLU and linear
  everywhere (their normalised correlation map only ever approaches 1);
  ``c* < 1`` in the chaotic phase: the root of ``c' - c`` by Newton's
  method safeguarded by bisection, with iterated one-dimensional quadrature.

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    sigma_b2: bias variance >= 0; broadcasts with ``sigma_w2``.

  Returns:
    c* in [0, 1], float or float64 array.

  References:
    Schoenholz et al. 2017, eq. 5; Poole et al. 2016, eq. 5. Price. A
    useful theorem for nonlinear devices having Gaussian inputs. IRE Trans.
    Inf. Theory 1958 (the slope of the map).
  """
  act = resolve(activation)
  sw, sb = np.broadcast_arrays(as_float("sigma_w2", sigma_w2, positive=True),
                               as_float("sigma_b2", sigma_b2))
  if act.name in ("relu", "linear"):
    return _scalar(np.ones_like(sw))
  chaotic = np.asarray(chi1(act, sw, sb)) > 1
  out = np.ones(sw.shape)
  if np.any(chaotic):
    sw, sb = sw[chaotic], sb[chaotic]
    q = np.asarray(q_star(act, sw, sb))
    out[chaotic] = _chaotic_c_star(act, sw, sb, q)
  return _scalar(out)


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
  chi = np.array(chi1(act, sw, sb), dtype=np.float64)
  chaotic = chi > 1
  if act.name not in ("relu", "linear") and np.any(chaotic):
    sw, sb = sw[chaotic], sb[chaotic]
    q = np.asarray(q_star(act, sw, sb))
    c = _chaotic_c_star(act, sw, sb, q)
    dphi = functools.partial(derivatives, act, order=1)
    chi[chaotic] = sw * expect_pair((dphi,), q, c)[0]
  with np.errstate(divide="ignore"):
    return _scalar(np.where(chi < 1, -1.0 / np.log(np.minimum(chi, 1.0)),
                            np.inf))


def _chaotic_c_star(act: Activation, sw: np.ndarray, sb: np.ndarray,
                    q: np.ndarray) -> np.ndarray:
  """c* for 1-d arrays of chaotic (``chi_1 > 1``) points with q* = ``q``."""
  phi = functools.partial(derivatives, act, order=0)
  dphi = functools.partial(derivatives, act, order=1)

  def excess(c, at):  # slope: d/dc E[phi phi] = q E[phi' phi'] (Price 1958)
    e, de = expect_pair((phi, dphi), q[at], c)
    return (sw[at] * e + sb[at]) / q[at] - c, sw[at] * de - 1.0

  return _root(excess, np.zeros_like(sw), np.full_like(sw, 1.0 - 1e-9), 60,
               np.full_like(sw, 2.0**-60))


def _root(fn, lo: np.ndarray, hi: np.ndarray, steps: int,
          floor: np.ndarray) -> np.ndarray:
  """Roots of ``g`` in ``[lo, hi]`` with ``g(lo) >= 0 > g(hi)``, elementwise.

  Newton steps, replaced by bisection where they would leave the bracket
  (Press et al., Numerical Recipes, 3rd ed. 2007, Section 9.4, ``rtsafe``);
  ``fn(x, at)`` returns ``(g, g')`` at the elements ``at`` (flat indices of
  ``lo``). An element is done when the Newton step or the bracket is ~1 ulp,
  and is 0 once ``g < 0`` at some x below ``floor`` with ``lo = 0`` (the
  root is 0 to that resolution, as for tanh with ``sigma_b2 = 0``).
  """
  lo, hi = lo.copy(), hi.copy()
  x = 0.5 * (lo + hi)
  at = np.arange(x.size)
  converged = np.zeros(x.size, dtype=bool)
  for _ in range(steps):
    xa = x[at]
    g, dg = fn(xa, at)
    up = g >= 0
    la, ha = np.where(up, xa, lo[at]), np.where(up, hi[at], xa)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
      newton = xa - g / dg
    inside = np.isfinite(newton) & (newton > la) & (newton < ha)
    xn = np.where(inside, newton, 0.5 * (la + ha))
    zero = (la == 0) & (ha < floor[at])
    done = ((np.abs(xn - xa) <= 2.0 * _EPS * xa) | (ha - la <= 2.0 * _EPS * ha)
            | zero)
    lo[at], hi[at], x[at] = la, ha, xn
    converged[at[done]] = ~zero[done]
    at = at[~done]
    if at.size == 0:
      break
  return np.where((lo == 0) & ~converged, 0.0, x)
