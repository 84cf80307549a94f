"""Gradient explosion in batch-normalised MLPs at initialisation.

Layer: ``z = h W^T`` (``W_ij ~ N(0, sigma_w2 / n)``; BN makes ``sigma_w2``
and biases irrelevant), ``y = BN(z)`` per unit over a batch of B without
affine, ``h' = phi(y)``. Per unit, ``y = sqrt(B) P z / ||P z||`` with
``P = I - 11^T / B``; its Jacobian is ``sqrt(B) / ||P z|| (P - u u^T)``,
``u = y / sqrt(B)``. At infinite width the batch Gram matrix converges to a
permutation-symmetric fixed point, so ``P z`` is isotropic in the (B-1)-dim
space orthogonal to 1: u is uniform on its sphere and ``||P z||^2`` is
``a chi^2_(B-1)``, independent of u, where ``a = E||P phi(sqrt(B) u)||^2 /
(B-1)``. The backward map on the (B, B) gradient Gram matrix has the
symmetric eigenvector P, with eigenvalue

  lambda_B = B E_u[tr((P - uu^T) D P D)] / ((B - 3) E_u||P phi(sqrt(B) u)||^2)

(``D = diag(phi'(sqrt(B) u))``, ``E[1 / chi^2_(B-1)] = 1 / (B - 3)``). This
is the per-layer growth of the squared gradient norm, independent of the
weight scale: gradients explode with depth for every B >= 4.
"""

from __future__ import annotations

import math

import numpy as np

from exploding import _theory_gaussian as gauss
from exploding import _theory_meanfield as mf


def batchnorm_gradient_rate(activation, batch_size: int, *,
                            samples: int = 1 << 18, seed: int = 0) -> float:
  """Per-layer growth of the squared gradient norm in a BN MLP at init.

  Exact (closed form, infinite width, gradient-independence assumption) for
  linear, ``(B - 2) / (B - 3)``, and for ReLU, from the orthant moments of
  the batch-centred Gaussian (correlation ``rho = -1 / (B - 1)``); the ReLU
  rate tends to ``pi / (pi - 1) ~ 1.4669`` as B grows. Other activations:
  Monte-Carlo over u with a fixed seed (relative error ~ 1e-3 at the default
  ``samples``). ``B = 2`` gives 0 (BN output is +-1, its Jacobian vanishes);
  ``B = 3`` gives ``inf`` (``E[1/chi^2_2]`` diverges; BN's eps keeps real
  nets finite). The norm (not squared) of a Jacobian-vector product of the
  whole (batch, width) state grows by ``0.5 log`` of this per layer.

  Args:
    activation: a name or an ``Activation``.
    batch_size: B, an int >= 2.
    samples: Monte-Carlo samples for activations without a closed form.
    seed: the numpy seed of that Monte-Carlo estimate.

  Returns:
    lambda_B as a float.

  References:
    Yang, Pennington, Rao, Sohl-Dickstein, Schoenholz. A mean field theory
    of batch normalization. ICLR 2019, Section 3 (gradient explosion; the
    linear rate (B-2)/(B-3) and the ReLU large-B limit pi/(pi-1)). The
    finite-B ReLU closed form is derived here (see ``_relu_moments``) and
    checked against Monte-Carlo and a simulated width-128 network.

  Example:
    >>> batchnorm_gradient_rate("linear", 8)
    1.2
  """
  act = mf.resolve(activation)
  b = batch_size
  if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 2:
    raise ValueError(f"batch_size must be an int >= 2, got {batch_size!r}")
  b = int(b)
  if b == 2:
    return 0.0
  if b == 3:
    return math.inf
  if act.name == "linear":
    return (b - 2) / (b - 3)
  if act.name == "relu":
    num, den = _relu_moments(b)
  else:
    num, den = _monte_carlo(act, b, samples, seed)
  return b * num / ((b - 3) * den)


def batchnorm_log_gradient_rate(activation, batch_size: int,
                                **kwargs) -> float:
  """``log batchnorm_gradient_rate``: the per-layer log growth (natural).

  Args:
    activation: a name or an ``Activation``.
    batch_size: B, an int >= 2.
    **kwargs: ``samples``, ``seed`` as in ``batchnorm_gradient_rate``.

  Returns:
    The natural log of the squared-norm rate (``-inf`` for B = 2).

  References:
    Yang et al. 2019, Section 3.
  """
  rate = batchnorm_gradient_rate(activation, batch_size, **kwargs)
  return -math.inf if rate == 0 else math.log(rate)


def _relu_moments(b: int) -> tuple[float, float]:
  """(E tr((P - uu^T) D P D), E||P relu(sqrt(B) u)||^2) in closed form.

  With ``x = P xi`` (xi standard normal) the pair (x_i, x_j) is Gaussian
  with variance ``v = 1 - 1/B`` and correlation ``rho = -1/(B-1)``; k, the
  number of positive u_i, has ``E k = B/2`` and ``E k^2 = B/2 + B(B-1)
  (1/4 + asin(rho) / 2pi)``; ``E[relu(x_i) relu(x_j)]`` is the arc-cosine
  kernel ``v (sqrt(1 - rho^2) + (pi - acos rho) rho) / 2pi`` (Cho, Saul
  2009).
  """
  rho, v = -1.0 / (b - 1), 1.0 - 1.0 / b
  ek = b / 2
  ek2 = b / 2 + b * (b - 1) * (0.25 + math.asin(rho) / (2 * math.pi))
  kernel = v * (math.sqrt(1 - rho * rho) + (math.pi - math.acos(rho)) * rho)
  # A = E||P relu(u)||^2 = E sum_+ u_i^2 - E (sum_+ u_i)^2 / B, E u_i^2 = 1/B.
  a = 0.5 - 0.5 / b - kernel / (2 * math.pi)
  # tr(D P D P) = k (1 - 2/B) + k^2 / B^2; u^T D P D u = A for 0/1 masks.
  num = ek * (1 - 2 / b) + ek2 / b**2 - a
  return num, b * a


def _monte_carlo(act, b: int, samples: int, seed: int) -> tuple[float, float]:
  """The two expectations of ``lambda_B`` by sampling u (chunked)."""
  if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)):
    raise ValueError(f"samples must be an int >= 1, got {samples!r}")
  if samples < 1:
    raise ValueError(f"samples must be an int >= 1, got {samples!r}")
  rng = np.random.default_rng(seed)
  chunk = max(1, (1 << 21) // b)
  num = den = 0.0
  done = 0
  while done < samples:
    m = min(chunk, samples - done)
    xi = rng.standard_normal((m, b))
    x = xi - xi.mean(axis=1, keepdims=True)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = math.sqrt(b) * u
    d = gauss.derivatives(act, y, 1)
    p = gauss.derivatives(act, y, 0)
    d2 = d * d
    # tr(D P D P) - u^T D P D u, with D P D = diag(d^2) - d d^T / B.
    tr = d2.sum(1) * (1 - 2 / b) + d.sum(1)**2 / b**2
    quad = (d2 * u * u).sum(1) - (d * u).sum(1)**2 / b
    num += float(np.sum(tr - quad))
    pc = p - p.mean(axis=1, keepdims=True)
    den += float(np.sum(pc * pc))
    done += m
  return num / samples, den / samples
