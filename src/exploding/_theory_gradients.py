"""Gradient growth rates: recurrent, gated, normalised, spectra (residual
nets: ``_theory_residual``).

Each function predicts how a gradient's squared norm grows per layer or step
for one architecture at initialisation, from mean-field theory (infinite
width) or, where stated, exactly at finite width.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from exploding import _theory_gaussian as gauss
from exploding import _theory_meanfield as mf


def rnn_lyapunov_max(activation, weight_scale, bias_scale=0.0):
  """Mean-field largest Lyapunov exponent of ``h -> phi(g W h + b)``.

  With ``W_ij ~ N(0, 1/n)``, ``b_i ~ N(0, bias_scale^2)`` and the state at
  its fixed-point variance q*, a tangent's squared norm grows by chi_1 per
  step, so ``lambda_max = 0.5 log chi_1(phi, g^2, bias_scale^2)`` (natural
  log, per step). For tanh without bias and ``g < 1`` (q* = 0) this is
  ``log g``; ``lambda_max > 0`` is the chaotic (exploding) regime. This is
  the width -> inf limit: one fixed n x n W has spectral radius ~1 +
  O(sqrt(log n / n)), so at n = 256 the ordered-phase exponent is ~0.1
  above ``log g`` and the chaotic one is smaller near ``g = 1``; at
  n = 1024, g = 2 and 3 a simulation gives 0.154 and 0.306 against 0.155
  and 0.310. Exact (~1e-12) at any g: g = 5 gives 0.53243 (a fixed
  101-node Gauss-Hermite rule gave 0.608).

  Args:
    activation: a name or an ``Activation``.
    weight_scale: g > 0; float or float array.
    bias_scale: sigma_b >= 0; broadcasts with ``weight_scale``.

  Returns:
    lambda_max per step, float or float64 array.

  References:
    Sompolinsky, Crisanti, Sommers. Chaos in random neural networks. PRL
    1988. Poole et al. 2016, eq. 7 (chi_1 as the stretch factor).

  Example:
    >>> round(rnn_lyapunov_max("tanh", 0.5), 6) == round(math.log(0.5), 6)
    True
  """
  g = mf.as_float("weight_scale", weight_scale, positive=True)
  b = mf.as_float("bias_scale", bias_scale)
  with np.errstate(divide="ignore"):
    return mf._scalar(0.5 * np.log(np.asarray(
        mf.chi1(activation, g**2, b**2))))


def pascanu_vanishing_bound(activation) -> float:
  """Largest singular value of W below which RNN gradients must vanish.

  For ``h_t = phi(W h_(t-1) + ...)`` the step Jacobian is ``diag(phi') W``,
  whose norm is at most ``gamma ||W||`` with ``gamma = sup |phi'|``, so
  ``||W|| < 1/gamma`` makes gradients vanish geometrically (a sufficient
  condition; the converse bound for exploding is only necessary).

  Args:
    activation: a name or an ``Activation``.

  Returns:
    ``1 / gamma``: 1 for tanh, ReLU, linear; 4 for sigmoid.

  References:
    Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
    networks. ICML 2013, Section 3.1.
  """
  return 1.0 / mf.resolve(activation).gamma


def lstm_forget_gradient(forget_bias, length):
  """Log gradient factor through ``length`` LSTM cell steps, ``W = 0``.

  With zero recurrent weights and no input the forget gate is
  ``sigmoid(b_f)`` every step and ``dc_T / dc_0 = sigmoid(b_f)^T``; this
  returns its natural log, ``T log sigmoid(b_f)``, computed stably.

  Args:
    forget_bias: b_f; finite float or float array.
    length: T, an int >= 1.

  Returns:
    ``T log sigmoid(b_f)`` (<= 0), float or float64 array.

  References:
    Hochreiter, Schmidhuber. Long short-term memory. 1997. Gers, Schmidhuber,
    Cummins. Learning to forget. 2000. Jozefowicz, Zaremba, Sutskever. An
    empirical exploration of recurrent network architectures. ICML 2015
    (forget bias 1).
  """
  b = _finite("forget_bias", forget_bias)
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
    raise ValueError(f"length must be an int >= 1, got {length!r}")
  if length < 1:
    raise ValueError(f"length must be an int >= 1, got {length!r}")
  return mf._scalar(-int(length) * np.logaddexp(0.0, -b))


def lstm_memory_time(forget_bias):
  """Steps over which an LSTM cell's gradient decays by e: ``-1/log f``.

  Args:
    forget_bias: b_f; finite float or float array.

  Returns:
    ``-1 / log sigmoid(b_f) = 1 / log(1 + exp(-b_f))``, float or array.

  References:
    Gers et al. 2000; Tallec, Ollivier. Can recurrent neural networks warp
    time? ICLR 2018 (chrono initialisation: memory time ~ 1/(1 - f)).
  """
  b = _finite("forget_bias", forget_bias)
  return mf._scalar(1.0 / np.logaddexp(0.0, -b))


def jacobian_spectrum_moments(activation, depth, init="gaussian",
                              sigma_w2=None, sigma_b2=0.0):
  """Mean and variance of the squared singular values of J = prod D_l W_l.

  Free probability (Pennington et al. 2017, eqs. 14-17): with
  ``mu_k = E[phi'(sqrt(q*) z)^(2k)]`` and the S-transform of the normalised
  ``W W^T`` equal to ``1 + s_1 z + ...`` (``s_1 = -1`` Gaussian, ``0``
  orthogonal), the spectrum of ``J J^T`` over L layers has

    mean = chi_1^L,   variance = chi_1^(2L) L (mu_2 / mu_1^2 - 1 - s_1).

  At criticality the mean is 1. Linear orthogonal gives variance 0
  (isometry), linear Gaussian L, ReLU orthogonal L, ReLU Gaussian 2L, tanh
  orthogonal at ``sigma_b2 -> 0`` tends to 0 (dynamical isometry).
  Asymptotic in width; the input is assumed at q*.

  Args:
    activation: a name or an ``Activation``.
    depth: L, an int >= 1.
    init: ``"gaussian"`` or ``"orthogonal"`` weights.
    sigma_w2: weight variance > 0; ``None`` for ``critical_sigma_w2``.
    sigma_b2: bias variance >= 0 (float).

  Returns:
    ``(mean, variance)`` as floats.

  References:
    Pennington, Schoenholz, Ganguli. Resurrecting the sigmoid in deep
    learning through dynamical isometry. NeurIPS 2017, eqs. 14-17.
  """
  act = mf.resolve(activation)
  if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)):
    raise ValueError(f"depth must be an int >= 1, got {depth!r}")
  if depth < 1:
    raise ValueError(f"depth must be an int >= 1, got {depth!r}")
  if init not in ("gaussian", "orthogonal"):
    raise ValueError(
        f"init must be one of ['gaussian', 'orthogonal'], got {init!r}")
  sb = float(mf.as_float("sigma_b2", sigma_b2))
  if sigma_w2 is None:
    sw = float(mf.critical_sigma_w2(act, sb))
  else:
    sw = float(mf.as_float("sigma_w2", sigma_w2, positive=True))
  q = float(mf.q_star(act, sw, sb))
  if not np.isfinite(q):
    q = 0.0 if act.name in ("relu", "linear") else math.nan
  mu1 = float(gauss.moment(act, np.float64(q), "dphi2"))
  mu2 = float(gauss.moment(act, np.float64(q), "dphi4"))
  s1 = -1.0 if init == "gaussian" else 0.0
  chi = sw * mu1
  return chi**depth, chi**(2 * depth) * depth * (mu2 / mu1**2 - 1.0 - s1)


def hanin_gradient_fluctuation(widths: Sequence[int]) -> float:
  """Second-moment ratio of ``||J u||^2`` for a He-initialised ReLU net.

  For ``h_j = relu(W_j h_(j-1))``, ``W_j`` Gaussian with variance
  ``2 / n_(j-1)``, no biases, and any fixed input and unit direction u,
  ``||J u||^2 = prod_j (2 / n_(j-1)) chi^2_(K_j)``, ``K_j ~ Binomial(n_j,
  1/2)``, independent over layers (the mask and the tangent row decouple by
  the symmetry of the weights). Hence, exactly at every width,

    E[||J u||^4] / E[||J u||^2]^2 = prod_j (1 + 5 / n_j),

  which is ``~ exp(5 sum_j 1/n_j)``: Hanin's result that gradient
  fluctuations are set by ``sum 1/n_j``, not by depth alone. The variance
  of ``log ||J u||^2`` is asymptotically ``5 sum 1/n_j`` (not computed).

  Args:
    widths: hidden widths ``n_1, ..., n_L`` (each layer followed by ReLU),
      ints >= 1.

  Returns:
    The ratio as a float (1 for an empty sequence).

  References:
    Hanin. Which neural net architectures give rise to exploding and
    vanishing gradients? NeurIPS 2018, Thm 1. Hanin, Nica. Products of many
    large random matrices and gradients in deep neural networks. CMP 2019.
  """
  ratio = 1.0
  for n in widths:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ValueError(f"widths must be ints >= 1, got {widths!r}")
    ratio *= 1.0 + 5.0 / int(n)
  return ratio


def _finite(name, value):
  arr = np.asarray(value, dtype=np.float64)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} must be finite, got {value!r}")
  return arr
