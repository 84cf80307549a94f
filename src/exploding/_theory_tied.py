"""Recurrent nets with one tied matrix: the ordered rate of one draw of W0.

Mean field is the infinite-width limit. A recurrent net applies one ``W0``
at every step, and that draw decides where its gradients stop vanishing.
In the ordered phase its state settles on a fixed point ``h* = phi(g W0
h* + b)``,
and from then on every step has the same Jacobian ``J* = g diag(phi'(z*))
W0`` (``z* = g W0 h* + b``): a tangent grows by ``log rho(J*)`` per step,
exactly, for this draw of ``W0`` (``rho``: spectral radius). With
``phi(0) = 0`` and no bias (linear, tanh, erf, hard-tanh), ``h* = 0`` and
the rate is ``log(g phi'(0) rho(W0))``; ``rho(W0)`` of an ``n x n``
Gaussian matrix with variance ``1/n`` is ``1 + O(n^-1/2)`` and differs from
seed to seed (the edge of the circular law), so the ordered phase ends at
``1 / (phi'(0) rho(W0))`` per seed, not at the mean-field 1. For sigmoid
``h*`` is not 0; it is followed from ``g = 0`` by Newton's method (all
seeds at once: batched solves and eigensolves), from below ``1 / (gamma
sigma_max(W0))``, where the map contracts and has one fixed point. Past
the end the state may settle on a cycle instead, whose rate can be
negative too: the measured edge is usually at or above this one.

References:
  Sompolinsky, Crisanti, Sommers. Chaos in random neural networks. PRL 1988.
  Tao, Vu. Random matrices: the circular law. Commun. Contemp. Math. 2008.
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013 (below 1 / (gamma sigma_max) the map contracts).
"""

from __future__ import annotations

import numpy as np

from exploding import _theory_gaussian as gauss
from exploding import _theory_meanfield as mf


def sweep_params(model, seeds: int, key=0):
  """The params ``ex.sweep(model, seeds=seeds, key=key)`` draws, per seed.

  Seed ``s`` draws from the first of four keys split from
  ``fold_in(key, s)``, as the sweep does, so ``spectral_radius`` and
  ``tied_ordered_rate`` see the very ``W0`` a map was measured with.

  Args:
    model: an ``exploding.Model`` (e.g. ``ex.rnn.model(128,
      activation="tanh")``, what ``ex.sweep("rnn", hidden=128, ...)``
      builds).
    seeds: number of seeds, >= 1.
    key: the sweep's ``key``: an int seed or a PRNG key.

  Returns:
    The model's params with a leading ``seeds`` axis on every leaf.

  Example:
    >>> import exploding as ex
    >>> p = ex.theory.sweep_params(ex.rnn.model(8), seeds=3)
    >>> p.W0.shape
    (3, 8, 8)
  """
  import jax
  import jax.numpy as jnp

  from exploding import jacobian
  if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) \
      or seeds < 1:
    raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
  base = jacobian.as_key(key)

  def draw(s):
    return model.init(jax.random.split(jax.random.fold_in(base, s), 4)[0])

  return jax.jit(jax.vmap(draw))(jnp.arange(int(seeds)))


def spectral_radius(w0) -> np.ndarray | float:
  """Largest eigenvalue modulus of each square matrix.

  Args:
    w0: ``(..., n, n)`` float array.

  Returns:
    ``(...)`` float64 (a float for one matrix).
  """
  w = _square("w0", w0)
  return mf._scalar(np.max(np.abs(np.linalg.eigvals(w)), axis=-1))


def tied_ordered_rate(activation, weight_scale, w0, *, bias=None,
                      stop=False):
  """Growth per step of an RNN's tangent at its fixed point, for one ``W0``.

  ``log rho(J*)``, ``J* = g diag(phi'(z*)) W0`` at the fixed point ``h* =
  phi(g W0 h* + b)`` followed from ``g = 0`` (natural log, per step; the
  norm's rate, as ``GradientMap.rate`` measures). Exact while the fixed
  point is stable (value < 0) and the state has reached it; a value >= 0
  says the fixed point is unstable and the net has left the ordered phase.
  ``log(g phi'(0) rho(W0))`` where ``phi(0) = 0`` and there is no bias.
  NaN past a fold of the branch (Newton's method fails).

  Args:
    activation: a name or an ``Activation``; not ``"relu"`` (homogeneous:
      its state has no fixed point but a direction).
    weight_scale: g > 0; float or 1-D float array.
    w0: ``(..., n, n)`` unit recurrent matrices (e.g. ``sweep_params(...)
      .W0``).
    bias: ``(..., n)`` the bias ``bias_scale * b0``; ``None`` for none.
    stop: leave NaN past the first scale where the followed fixed point is
      unstable (saves the eigensolves there; not for the closed form).

  Returns:
    float64 of shape ``w0.shape[:-2] + np.shape(weight_scale)``.

  References:
    Sompolinsky et al. 1988 (the ordered phase of a random RNN); Tao, Vu
    2008 (rho(W0) -> 1, the circular law).

  Example:
    >>> import numpy as np
    >>> w0 = np.diag([0.5, -2.0])
    >>> round(tied_ordered_rate("tanh", 0.25, w0), 6)  # log(0.25 * 2)
    -0.693147
  """
  act = _recurrent(activation)
  g = mf.as_float("weight_scale", weight_scale, positive=True)
  if g.ndim > 1:
    raise ValueError(f"weight_scale must be a float or 1-D, got shape "
                     f"{g.shape}")
  w, b = _square("w0", w0), _bias(bias, w0)
  if b is None and _zero_fixed_point(act):
    slope = float(gauss.derivatives(act, np.zeros(()), 1))
    with np.errstate(divide="ignore"):
      rho = np.log(np.max(np.abs(np.linalg.eigvals(w)), axis=-1))
    return mf._scalar(rho[..., None] + np.log(slope * np.atleast_1d(g))
                      if g.ndim else rho + np.log(slope * g))
  w, b, batch = _flat(w, b)
  gs = np.atleast_1d(g)
  out = np.full((w.shape[0], gs.size), np.nan)
  branch = _Branches(act, w, b)
  for j in np.argsort(gs):
    if not np.any(branch.alive):
      break
    branch.advance(np.full(w.shape[0], gs[j]))
    out[:, j] = branch.rate()
    if stop:
      branch.alive &= ~(out[:, j] >= 0)
  return mf._scalar(out.reshape(batch + g.shape))


def tied_critical_scale(activation, w0, *, bias=None):
  """The weight scale where ``tied_ordered_rate`` first reaches 0, per W0.

  ``1 / (phi'(0) rho(W0))`` where ``phi(0) = 0`` and there is no bias;
  otherwise the fixed point is followed up from ``g = 1 / (gamma
  sigma_max(W0))`` (below which it is stable: Pascanu et al. 2013) in steps
  of 10% and the crossing found by regula falsi to 1e-6 relative, for
  every matrix at once. NaN if the branch folds or stays stable up to
  ``1e3`` times that start.

  Args:
    activation: as in ``tied_ordered_rate``.
    w0: ``(..., n, n)`` unit recurrent matrices.
    bias: ``(..., n)`` or ``None``.

  Returns:
    ``(...)`` float64 (a float for one matrix).

  Example:
    >>> import numpy as np
    >>> round(tied_critical_scale("linear", np.diag([0.5, -2.0])), 6)
    0.5
  """
  act = _recurrent(activation)
  w, b = _square("w0", w0), _bias(bias, w0)
  if b is None and _zero_fixed_point(act):
    slope = float(gauss.derivatives(act, np.zeros(()), 1))
    return mf._scalar(
        1.0 / (slope * np.max(np.abs(np.linalg.eigvals(w)), axis=-1)))
  w, b, batch = _flat(w, b)
  return mf._scalar(_critical(act, w, b).reshape(batch))


# Private helpers --------------------------------------------------------------


class _Branches:
  """Fixed points of ``h -> phi(g W h + b)``, one per matrix of a batch,
  followed in g by Newton's method (batched solves)."""

  def __init__(self, act, w, b):
    self.act, self.w, self.b = act, w, b
    self.g = np.zeros(w.shape[0])
    self.h = gauss.derivatives(act, b, 0)
    self.alive = np.ones(w.shape[0], bool)   # False once Newton failed
    # Below this the map contracts (Pascanu et al. 2013): one fixed point,
    # which Newton reaches from phi(b) in one jump.
    self.contracting = 0.5 / (act.gamma * np.linalg.norm(w, ord=2,
                                                         axis=(1, 2)))

  def advance(self, g: np.ndarray) -> None:
    """Moves each live branch to its ``g`` (>= its current one) in steps of
    at most 10%, halved where Newton fails; dead at a step of 0.1%."""
    ratio = np.full(self.g.shape, 1.1)
    while True:
      todo = np.flatnonzero(self.alive & (self.g < g))
      if todo.size == 0:
        return
      cur = self.g[todo]
      step = np.where(cur == 0, np.minimum(g[todo], self.contracting[todo]),
                      np.minimum(g[todo], cur * ratio[todo]))
      h, ok = self.newton(todo, step, self.h[todo])
      self.g[todo[ok]], self.h[todo[ok]] = step[ok], h[ok]
      bad = todo[~ok]
      ratio[bad] = 1.0 + 0.5 * (ratio[bad] - 1.0)
      self.alive[bad[(self.g[bad] == 0) | (ratio[bad] < 1.001)]] = False

  def rate(self, at=None, g=None, h=None) -> np.ndarray:
    """``log rho(J*)`` of branches ``at`` (default: all; NaN where dead)."""
    at = np.arange(self.g.size) if at is None else at
    g = self.g[at] if g is None else g
    h = self.h[at] if h is None else h
    out = np.full(at.size, np.nan)
    live = self.alive[at]
    if not np.any(live):
      return out
    at, g, h = at[live], g[live], h[live]
    z = g[:, None] * np.einsum("kij,kj->ki", self.w[at], h) + self.b[at]
    jac = (g[:, None] * gauss.derivatives(self.act, z, 1))[:, :, None] \
        * self.w[at]
    with np.errstate(divide="ignore"):
      out[live] = np.log(np.max(np.abs(np.linalg.eigvals(jac)), axis=-1))
    return out

  def newton(self, at, g, h):
    """Fixed points of branches ``at`` at scales ``g`` from ``h``: ``(h,
    converged)``."""
    h = h.copy()
    ok = np.zeros(at.size, bool)
    todo = np.arange(at.size)
    eye = np.eye(h.shape[-1])
    for _ in range(60):
      w, gg, hh = self.w[at[todo]], g[todo, None], h[todo]
      z = gg * np.einsum("kij,kj->ki", w, hh) + self.b[at[todo]]
      f = gauss.derivatives(self.act, z, 0) - hh
      done = np.max(np.abs(f), axis=-1) <= 1e-12 * np.maximum(
          1.0, np.max(np.abs(hh), axis=-1))
      ok[todo[done]] = True
      todo, f, z, w, gg = (a[~done] for a in (todo, f, z, w, gg))
      if todo.size == 0:
        break
      jac = (gg * gauss.derivatives(self.act, z, 1))[:, :, None] * w - eye
      try:
        h[todo] = h[todo] - np.linalg.solve(jac, f[..., None])[..., 0]
      except np.linalg.LinAlgError:
        break
      finite = np.all(np.isfinite(h[todo]), axis=-1)
      todo = todo[finite]
    return h, ok


def _critical(act, w, b) -> np.ndarray:
  """First g where each branch's rate reaches 0 (see tied_critical_scale):
  a scan in steps of 10% from its contracting start, then regula falsi
  (Illinois) on all brackets at once."""
  branch = _Branches(act, w, b)
  start = 2.0 * branch.contracting       # 1 / (gamma sigma_max)
  branch.advance(start)
  rate = branch.rate()
  lo_g, lo_h, lo_r = branch.g.copy(), branch.h.copy(), rate.copy()
  out = np.where(rate >= 0, start, np.nan)
  scan = branch.alive & (rate < 0)
  while np.any(scan):
    idx = np.flatnonzero(scan)
    lo_g[idx], lo_h[idx], lo_r[idx] = branch.g[idx], branch.h[idx], rate[idx]
    target = branch.g.copy()
    target[idx] *= 1.1
    branch.advance(target)
    rate[idx] = branch.rate(idx)
    scan = branch.alive & (rate < 0) & (branch.g <= 1e3 * start)
  crossed = np.flatnonzero(branch.alive & (rate >= 0) & np.isnan(out))
  lo, hi = lo_g[crossed], branch.g[crossed]
  f_lo, f_hi = lo_r[crossed], rate[crossed]
  h_lo, side = lo_h[crossed], np.zeros(crossed.size)
  for _ in range(60):
    x = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
    open_ = hi - lo > 1e-6 * hi
    if not np.any(open_):
      break
    k = np.flatnonzero(open_)
    h, ok = branch.newton(crossed[k], x[k], h_lo[k])
    fx = np.where(ok, branch.rate(crossed[k], x[k], h), np.nan)
    below = fx < 0
    above = ~below & np.isfinite(fx)
    hi[k[~np.isfinite(fx)]] = lo[k[~np.isfinite(fx)]]   # give up: NaN below
    f_lo[k[~np.isfinite(fx)]] = np.nan
    kb, ka = k[below], k[above]
    lo[kb], f_lo[kb], h_lo[kb] = x[kb], fx[below], h[below]
    f_hi[kb[side[kb] == -1]] *= 0.5
    side[kb] = -1
    hi[ka], f_hi[ka] = x[ka], fx[above]
    f_lo[ka[side[ka] == 1]] *= 0.5
    side[ka] = 1
  out[crossed] = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
  return out


def _flat(w, b):
  """``w`` as ``(k, n, n)``, ``b`` as ``(k, n)`` (zeros for None), and the
  batch shape."""
  batch = w.shape[:-2]
  w = w.reshape((-1,) + w.shape[-2:])
  b = np.zeros(w.shape[:-1]) if b is None else np.broadcast_to(
      b, batch + w.shape[-1:]).reshape(w.shape[:-1])
  return w, b, batch


def _recurrent(activation):
  act = mf.resolve(activation)
  if act.name == "relu":
    raise ValueError("activation 'relu' has no ordered fixed point with a "
                     "derivative (the state keeps a direction, not a "
                     "value); use tanh, linear, sigmoid, erf or hard_tanh")
  return act


def _zero_fixed_point(act) -> bool:
  return float(gauss.derivatives(act, np.zeros(()), 0)) == 0.0


def _square(name, w0):
  w = np.asarray(w0, np.float64)
  if w.ndim < 2 or w.shape[-1] != w.shape[-2] or not np.all(np.isfinite(w)):
    raise ValueError(f"{name} must be finite square matrices (..., n, n), "
                     f"got shape {w.shape}")
  return w


def _bias(bias, w0):
  if bias is None:
    return None
  b = np.asarray(bias, np.float64)
  n = np.shape(w0)[-1]
  if b.ndim < 1 or b.shape[-1] != n or not np.all(np.isfinite(b)):
    raise ValueError(f"bias must be finite with last axis {n}, got shape "
                     f"{b.shape}")
  return b


