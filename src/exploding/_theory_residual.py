"""Residual nets ``h' = h + phi(W h + b)``: gradient growth with depth.

The layer Jacobian is ``I + diag(phi'(z)) W``, ``z = W h + b``,
``W_ij ~ N(0, sigma_w2 / n)``, ``b_i ~ N(0, sigma_b2)``. For a tangent
``v`` with ``u = W v``,

  |v'|^2 = |v|^2 + 2 v . (phi'(z) u) + |phi'(z) u|^2.

Mean field (Yang & Schoenholz 2017) drops the cross term: its mean is zero
when ``v`` is uncorrelated with the stream ``h`` and has no mean over the
units, and then squared gradients grow by ``1 + sigma_w2 E[phi'^2]`` per
layer (``residual_gradient_rate``). An activation with a nonzero mean
(ReLU, sigmoid) breaks this: every layer adds ``E[phi] > 0`` to every unit,
so the stream builds a coherent direction (its mean ``m``), and the
tangent's components along it, its mean ``mu = E[v_i]`` and its overlap
``c = E[h_i v_i]``, feed the cross term. By Stein's lemma (``Cov(z, u) =
sigma_w2 c``), per layer, with ``E`` over ``z ~ N(0, s)``, ``s = sigma_w2
q + sigma_b2`` and ``q = E[h_i^2]``:

  m'  = m + E[phi],                 q' = q + 2 m E[phi] + E[phi^2],
  mu' = mu + sigma_w2 c E[phi''],
  c'  = c (1 + sigma_w2 (m E[phi''] + E[phi'^2 + phi phi''])) + mu E[phi],
  p'  = p (1 + sigma_w2 E[phi'^2]) + 2 sigma_w2 E[phi''] mu c
        + sigma_w2^2 c^2 Cov(phi'^2, z^2) / s^2,

(``p = E[v_i^2]``; ``E[phi''] = E[z phi'] / s`` and ``E[phi'^2 + phi
phi''] = E[z phi phi'] / s`` hold for kinks too). ``(mu, c)`` evolve
linearly and are tracked by their second moments. A random tangent of a
width-n net starts with ``mu, c = O(n^-1/2)`` (variances ``p/n``, ``q
p/n``); where the coherent mode grows faster than mean field's, it takes
over after ~``log(n) / (2 (rate_c - rate))`` layers, and from then on the
gradient grows at its rate: for ReLU, the state's own (``J h = h'``
exactly), 0.388 nats per layer at ``sigma_w2 = 1`` against mean field's
0.203, 0.860 against 0.712 at ``sigma_w2 = 6.25``. tanh is odd: ``m``,
``E[phi]``, ``E[phi'']`` vanish and mean field holds.

References:
  Yang, Schoenholz. Mean field residual networks: on the edge of chaos.
  NeurIPS 2017.
  Stein. Estimation of the mean of a multivariate normal distribution.
  Ann. Stat. 1981 (E[f(z) u] = Cov(z, u) E[f'(z)]).
  Hanin, Rolnick. How to start training: the effect of initialization and
  architecture. NeurIPS 2018.
"""

from __future__ import annotations

import numpy as np

from exploding import _theory_gaussian as gauss
from exploding import _theory_meanfield as mf


def residual_gradient_rate(activation, sigma_w2, sigma_b2=0.0, q=1.0):
  """Mean field's per-layer growth of the squared gradient, at stream q.

  ``1 + sigma_w2 E[phi'(z)^2]``, ``z ~ N(0, sigma_w2 q + sigma_b2)``: the
  growth of a tangent with no component along the stream's coherent
  direction, exact at infinite width. >= 1: the skip path never lets
  gradients vanish. For an activation with a nonzero mean a finite net's
  gradient grows faster once the coherent mode takes over (see
  ``residual_log_gradient`` with ``width``).

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    sigma_b2: bias variance >= 0; broadcasts.
    q: second moment of the residual stream h entering the layer, >= 0.

  Returns:
    The squared-norm growth factor, float or float64 array.

  References:
    Yang, Schoenholz 2017, Section 3 (gradient dynamics, Thm 3).
  """
  act = mf.resolve(activation)
  sw, sb, qq = np.broadcast_arrays(
      mf.as_float("sigma_w2", sigma_w2, positive=True),
      mf.as_float("sigma_b2", sigma_b2), mf.as_float("q", q))
  return mf._scalar(1.0 + sw * gauss.moment(act, sw * qq + sb, "dphi2"))


def residual_log_gradient(activation, sigma_w2, depth, sigma_b2=0.0, q0=1.0,
                          *, width=None, cumulative=False):
  """Log growth of the squared gradient through ``depth`` residual layers.

  Iterates the recursion of the module docstring from an input with
  per-entry variance ``q0`` and mean 0, and a random tangent (``p = 1``).
  ``width=None`` is the infinite-width limit (mean field: the coherent
  mode never starts); a finite ``width`` seeds it with its ``1/width``
  second moments, as a random probe of a width-n net has. tanh: identical
  (no coherent mode), and at fixed ``sigma_w2`` the total grows as
  ``sqrt(depth)`` (q grows linearly and ``E[tanh'^2] ~ 4 / (3 sqrt(2 pi
  s))``: 2.64 nats at 10 layers, 10.5 at 100, 34.3 at 1000 for ``sigma_w2
  = 1``); ``sigma_w2 = c / depth`` bounds it by ``c gamma^2``. ReLU:
  linear in depth, at ``log(1 + sigma_w2 / 2)`` per layer at infinite
  width, at the coherent rate once it takes over at finite width.
  Gaussian weights; the stream is rescaled each layer for ReLU and linear
  without bias (homogeneous), so it never overflows.

  Args:
    activation: a name or an ``Activation``.
    sigma_w2: weight variance > 0; float or float array.
    depth: number of residual layers, int >= 1.
    sigma_b2: bias variance >= 0; broadcasts.
    q0: per-entry variance of the network input, >= 0 (> 0 where
      ``sigma_b2 = 0``).
    width: n, an int >= 1, or ``None`` for infinite width.
    cumulative: return the totals after 1..depth layers (leading axis).

  Returns:
    Natural log of the squared-norm growth (half of it is the measured
    norm's ``log_growth``), float or float64 array.

  References:
    Yang, Schoenholz 2017, Thms 2-3; Hanin, Rolnick 2018 (scaling residual
    branches by 1/depth).

  Example:
    >>> import math
    >>> total = residual_log_gradient("relu", 0.2, 50)
    >>> round(total, 9) == round(50 * math.log(1.1), 9)
    True
  """
  act = mf.resolve(activation)
  if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)):
    raise ValueError(f"depth must be an int >= 1, got {depth!r}")
  if depth < 1:
    raise ValueError(f"depth must be an int >= 1, got {depth!r}")
  if width is not None and (isinstance(width, bool) or not isinstance(
      width, (int, np.integer)) or width < 1):
    raise ValueError(f"width must be an int >= 1 or None, got {width!r}")
  sw, sb, q = np.broadcast_arrays(
      mf.as_float("sigma_w2", sigma_w2, positive=True),
      mf.as_float("sigma_b2", sigma_b2), mf.as_float("q0", q0))
  if np.any((q == 0) & (sb == 0)):
    raise ValueError("q0 must be > 0 where sigma_b2 = 0 (the stream would "
                     "stay at 0)")
  q = q.copy()
  m = np.zeros(sw.shape)
  seed = 0.0 if width is None else 1.0 / int(width)
  s_mm, s_mc, s_cc = seed * np.ones(sw.shape), seed * m, seed * q
  rescale = (act.name in ("relu", "linear")) & (sb == 0)
  total, out = np.zeros(sw.shape), []
  for _ in range(int(depth)):
    mom = _moments(act, sw * q + sb)
    a_m, a_c = mom["dd"] * sw, 1.0 + sw * (m * mom["dd"] + mom["b"])
    p = (1.0 + sw * mom["dphi2"] + 2.0 * sw * mom["dd"] * s_mc
         + sw * sw * s_cc * mom["cov"])
    # (mu, c)' = A (mu, c), A = [[1, a_m], [E phi, a_c]]; S' = A S A^T.
    e1 = mom["phi"]
    s_mm, s_mc, s_cc = (
        s_mm + 2.0 * a_m * s_mc + a_m * a_m * s_cc,
        e1 * s_mm + (a_c + a_m * e1) * s_mc + a_m * a_c * s_cc,
        e1 * e1 * s_mm + 2.0 * e1 * a_c * s_mc + a_c * a_c * s_cc)
    q, m = q + 2.0 * m * e1 + mom["phi2"], m + e1
    # Normalise the tangent (p = 1) and, where homogeneous, the stream.
    total = total + np.log(p)
    s_mm, s_mc, s_cc = s_mm / p, s_mc / p, s_cc / p
    k = np.where(rescale, np.sqrt(q), 1.0)
    q, m, s_mc, s_cc = q / k**2, m / k, s_mc / k, s_cc / k**2
    out.append(total)
  return mf._scalar(np.stack(out) if cumulative else total)


def _moments(act, s: np.ndarray) -> dict[str, np.ndarray]:
  """Gaussian moments at variance ``s`` > 0: ``phi`` E[phi], ``phi2``
  E[phi^2], ``dphi2`` E[phi'^2], ``dd`` E[phi''] = E[z phi'] / s, ``b``
  E[phi'^2 + phi phi''] = E[z phi phi'] / s, ``cov`` Cov(phi'^2, z^2) /
  s^2."""
  u, w = gauss.gaussian_rule(np.zeros_like(s), np.sqrt(s))
  f, df = gauss.derivatives(act, u, 0), gauss.derivatives(act, u, 1)
  ss = s[..., None]
  return {
      "phi": np.sum(w * f, axis=-1),
      "phi2": np.sum(w * f * f, axis=-1),
      "dphi2": np.sum(w * df * df, axis=-1),
      "dd": np.sum(w * u * df, axis=-1) / s,
      "b": np.sum(w * u * f * df, axis=-1) / s,
      "cov": np.sum(w * df * df * (u * u - ss), axis=-1) / (s * s),
  }
