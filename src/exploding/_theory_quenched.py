"""Layers of finite width: the gradient of one input, quenched.

Mean field is the infinite-width limit, ``log E`` of each layer's factor.

A layer with fresh weights multiplies a tangent
``v``'s squared norm by ``X = (g^2/n) sum_i phi'(z_i)^2 xi_i^2``, where
``xi = sqrt(n) W v / |v|`` is standard normal for Gaussian ``W`` and
independent of the pre-activations ``z`` (exactly for ReLU, by the sign
symmetry of each row of ``W``: Hanin 2018; to O(1/n) otherwise). Mean field
is ``log E X = log chi_1``. The layers' factors are independent, so one
input's gradient grows by ``E log X`` per layer (the log of a product is a
sum), below ``log chi_1`` by about ``Var X / (2 (E X)^2) = O(1/n)``
(Jensen): the edge moves up, e.g. ReLU at n = 64 from sqrt(2) = 1.414 to
1.443. Here ``E log X`` is exact, from Frullani's integral

  E log S = int_0^inf (e^-t - E e^(-t S)) dt / t,
  E e^(-t S) = M(t/n)^n,  M(s) = E_z[(1 + 2 s phi'(sqrt(q) z)^2)^(-1/2)],

for ``S = X / g^2``, with ``M`` by the Gaussian rule of
``_theory_gaussian`` and the t-integral by the trapezoid rule in ``log t``
(exponentially convergent: the integrand is analytic in a strip). An
activation with ``phi' = 0`` on a set of probability ``p0`` (ReLU: 1/2)
zeroes a layer's gradient with probability ``p0^n``; the expectation is
conditional on that not happening. Orthogonal ``W``: ``xi`` is uniform on
the sphere of radius ``sqrt(n)``, so ``E log chi^2_n / n = psi(n/2) +
log(2/n)`` comes off (Beta: ReLU at n = 64: 1.432). With a batch of B
inputs the summed tangent averages B columns early on and sits between
this and mean field; these formulas are for one input.

References:
  Hanin. Which neural net architectures give rise to exploding and
  vanishing gradients? NeurIPS 2018.
  Newman. The distribution of Lyapunov exponents: exact results for random
  matrices. Commun. Math. Phys. 1986 (E log |W v| of Gaussian products).
"""

from __future__ import annotations

import math

import numpy as np

from exploding import _theory_gaussian as gauss
from exploding import _theory_meanfield as mf

_STEP = 0.25  # trapezoid step in log t (error ~ exp(-pi^2 / step))
_LOG_T = np.arange(-40.0, 60.0 + 1e-9, _STEP)
_LOG_T_MAX = 1500.0
_Q_CHUNK = 8  # pre-activation variances per vectorised block


def quenched_log_gradient_rate(activation, sigma_w2, sigma_b2, width, *,
                               init="gaussian", q=None):
  """``E log`` of one layer's squared-gradient factor at finite width.

  ``E log X``, ``X = |J v|^2 / |v|^2`` for one input (see the module
  docstring): mean field's ``log chi_1`` less the O(1/width) Jensen gap.
  Exact for ReLU and linear; to O(1/width^2) otherwise.

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    sigma_b2: bias variance >= 0; broadcasts.
    width: n, an int >= 1.
    init: ``"gaussian"`` or ``"orthogonal"`` weights.
    q: the pre-activations' variance, >= 0; ``None`` for ``q_star``.

  Returns:
    Natural log per layer, float or float64 array (half of it is the
    norm's rate, ``GradientMap.rate``).

  References:
    Hanin 2018, Thm 1 (ReLU, exact); Newman 1986 (linear: psi(n/2) +
    log(2/n)).

  Example:
    >>> import math
    >>> r = quenched_log_gradient_rate("linear", 1.0, 0.0, 4)
    >>> round(r, 12) == round(1 - 0.5772156649015329 - math.log(2), 12)
    True
  """
  act = mf.resolve(activation)
  n, kind = _width(width), _init(init)
  sw, sb = np.broadcast_arrays(mf.as_float("sigma_w2", sigma_w2, positive=True),
                               mf.as_float("sigma_b2", sigma_b2))
  if act.name in ("relu", "linear"):  # q cancels (q* may be 0, inf, nan)
    qq = np.ones(sw.shape)
  elif q is None:
    qq = np.asarray(mf.q_star(act, sw, sb), np.float64)
  else:
    qq = np.broadcast_to(mf.as_float("q", q), sw.shape)
  return mf._scalar(np.log(sw) + _expected_log(act, qq, n, kind))


def quenched_log_gradient(activation, sigma_w2, depth, width, *,
                          sigma_b2=0.0, q0=1.0, init="gaussian",
                          cumulative=False):
  """``E log`` of the squared-gradient growth through ``depth`` layers.

  Sums ``quenched_log_gradient_rate`` over the layers with each layer's
  pre-activation variance from the mean-field map, ``q_1 = sigma_w2 q0 +
  sigma_b2``, ``q_(l+1) = sigma_w2 E[phi(sqrt(q_l) z)^2] + sigma_b2``: the
  finite-width, finite-depth prediction for one input (tanh near the edge
  relaxes to q* only as 1/depth).

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    depth: number of layers, an int >= 1.
    width: n, an int >= 1.
    sigma_b2: bias variance >= 0; broadcasts.
    q0: per-entry variance of the input, >= 0.
    init: ``"gaussian"`` or ``"orthogonal"``.
    cumulative: return the totals after 1..depth layers (leading axis).

  Returns:
    Natural log of the squared-norm growth, float or float64 array.
  """
  act = mf.resolve(activation)
  L, n, kind = _depth(depth), _width(width), _init(init)
  sw, sb, q = np.broadcast_arrays(
      mf.as_float("sigma_w2", sigma_w2, positive=True),
      mf.as_float("sigma_b2", sigma_b2), mf.as_float("q0", q0))
  qs = [sw * q + sb]
  for _ in range(L - 1):
    qs.append(sw * gauss.moment(act, qs[-1], "phi2") + sb)
  qs = np.stack(qs)
  steps = np.log(sw) + _expected_log(act, qs, n, kind)
  total = np.cumsum(steps, axis=0)
  return mf._scalar(total if cumulative else total[-1])


def quenched_critical_sigma_w2(activation, width, sigma_b2=0.0, *,
                               init="gaussian", depth=None, q0=1.0):
  """The weight variance where one input's gradient neither grows nor decays.

  Without ``depth``: the root of ``quenched_log_gradient_rate`` at q*,
  the stationary edge of a deep net of this width. With ``depth``: the root
  of the least-squares slope of ``quenched_log_gradient(..., cumulative=
  True)`` over layers ``depth // 4 + 1 .. depth``, the window
  ``GradientMap.rate`` fits by default. At or above ``critical_sigma_w2``
  (Jensen), by regula falsi to 1e-10 relative.

  Args:
    activation: a name or an ``Activation``.
    width: n, an int >= 1.
    sigma_b2: bias variance >= 0, a float.
    init: ``"gaussian"`` or ``"orthogonal"``.
    depth: an int >= 4, or ``None``.
    q0: the input's per-entry variance (with ``depth``).

  Returns:
    sigma_w^2 at the finite-width edge, a float (its square root is the
    critical weight scale g_c); NaN if there is none below 1e4 times the
    mean-field one.

  Example:
    >>> round(quenched_critical_sigma_w2("relu", 64) ** 0.5, 4)
    1.4429
  """
  act = mf.resolve(activation)
  n, kind = _width(width), _init(init)
  sb = float(mf.as_float("sigma_b2", sigma_b2))
  if depth is None:
    rate = lambda sw: float(quenched_log_gradient_rate(act, sw, sb, n,
                                                       init=kind))
  else:
    L = _depth(depth)
    if L < 4:
      raise ValueError(f"depth must be an int >= 4, got {depth!r}")
    x = np.arange(L // 4 + 1, L + 1, dtype=np.float64)

    def rate(sw):
      y = quenched_log_gradient(act, sw, L, n, sigma_b2=sb, q0=q0,
                                init=kind, cumulative=True)[L // 4:]
      return float(np.polyfit(x, y, 1)[0])

  edge = float(mf.critical_sigma_w2(act, sb))
  if not np.isfinite(edge):
    return math.nan
  lo, f_lo = edge, rate(edge)
  if f_lo >= 0:
    return lo
  hi, f_hi = lo, f_lo
  while f_hi < 0:
    lo, f_lo = hi, f_hi
    hi *= 1.25
    if hi > 1e4 * edge:
      return math.nan
    f_hi = rate(hi)
  return _regula_falsi(rate, lo, hi, f_lo, f_hi)


# Private helpers --------------------------------------------------------------


def _expected_log(act, q, n: int, init: str) -> np.ndarray:
  """``E log((1/n) sum_i phi'(sqrt(q) z_i)^2 xi_i^2)`` (Frullani), minus
  ``E log(chi^2_n / n)`` for orthogonal weights; any shape of q."""
  q = np.asarray(q, np.float64)
  flat = q.reshape(-1)
  out = np.empty(flat.shape)
  for i in range(0, flat.size, _Q_CHUNK):
    u, w = gauss.gaussian_rule(0.0, np.sqrt(flat[i:i + _Q_CHUNK]))
    with np.errstate(divide="ignore"):
      log_a = np.log(gauss.derivatives(act, u, 1)**2)     # (k, nodes)
    p0 = np.sum(np.where(log_a == -np.inf, w, 0.0), axis=-1)  # P(phi' = 0)
    x = _LOG_T
    f = _frullani_integrand(log_a, w, p0, n, x)
    total = np.sum(f, axis=-1) - 0.5 * f[:, 0]
    # E e^(-tS) decays slowly where phi'^2 has a long tail near 0 (tanh at
    # large q, small n): extend the range until it is negligible.
    while np.max(np.abs(f[:, -1])) > 1e-17 and x[-1] < _LOG_T_MAX:
      x = x[-1] + _STEP * np.arange(1, x.size + 1)
      f = _frullani_integrand(log_a, w, p0, n, x)
      total = total + np.sum(f, axis=-1)
    out[i:i + _Q_CHUNK] = _STEP * (total - 0.5 * f[:, -1])
  if init == "orthogonal":
    out = out - _log_chi2_mean(n)
  return out.reshape(q.shape)


def _frullani_integrand(log_a, w, p0, n, x):
  """``e^-t - E[e^(-tS) | S > 0]`` at ``t = e^x``, ``(k, len(x))``."""
  # log(1 + y), y = 2 t a / n, and 1 - (1 + y)^-1/2 without cancellation
  # at small y or overflow at large t.
  log_y = math.log(2.0 / n) + x[:, None] + log_a[:, None, :]
  one_minus = -np.expm1(-0.5 * np.logaddexp(0.0, log_y))
  delta = np.sum(w[:, None, :] * one_minus, axis=-1)
  dead = p0[:, None]**n
  with np.errstate(invalid="ignore", divide="ignore"):
    laplace = np.exp(n * np.log1p(-np.minimum(delta, 1.0)))
    laplace = np.where(dead > 0, (laplace - dead) / (1.0 - dead), laplace)
  return np.exp(-np.exp(np.minimum(x, 700.0))) - laplace


def _log_chi2_mean(n: int) -> float:
  """``E log(chi^2_n / n) = psi(n/2) + log(2/n)``, psi summed exactly."""
  euler = 0.5772156649015329
  if n % 2 == 0:
    psi = -euler + sum(1.0 / j for j in range(1, n // 2))
  else:
    psi = -euler - 2.0 * math.log(2.0) + sum(
        2.0 / (2 * j - 1) for j in range(1, (n - 1) // 2 + 1))
  return psi + math.log(2.0 / n)


def _regula_falsi(fn, lo, hi, f_lo, f_hi, tol=1e-10):
  """Root of increasing ``fn`` in ``[lo, hi]`` (Illinois variant)."""
  side = 0
  for _ in range(100):
    x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
    if hi - lo <= tol * hi:
      break
    fx = fn(x)
    if not np.isfinite(fx):
      return math.nan
    if fx == 0:
      return x
    if fx < 0:
      lo, f_lo = x, fx
      if side == -1:
        f_hi *= 0.5
      side = -1
    else:
      hi, f_hi = x, fx
      if side == 1:
        f_lo *= 0.5
      side = 1
    if abs(hi - lo) <= tol * hi:
      break
  return (lo * f_hi - hi * f_lo) / (f_hi - f_lo)


def _width(width) -> int:
  if isinstance(width, bool) or not isinstance(width, (int, np.integer)) \
      or width < 1:
    raise ValueError(f"width must be an int >= 1, got {width!r}")
  return int(width)


def _depth(depth) -> int:
  if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) \
      or depth < 1:
    raise ValueError(f"depth must be an int >= 1, got {depth!r}")
  return int(depth)


def _init(init) -> str:
  if init not in ("gaussian", "orthogonal"):
    raise ValueError(
        f"init must be one of ['gaussian', 'orthogonal'], got {init!r}")
  return init
