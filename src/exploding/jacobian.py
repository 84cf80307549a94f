"""The engine: growth of Jacobian products, measured in log space.

A transition ``f(state, x) -> state`` applied T times has the end-to-end
Jacobian ``dh_T/dh_0 = J_T ... J_1`` with ``J_t = df/dh (h_{t-1}, x_t)``.
A product of T factors slightly above or below one overflows or underflows
in floating point long before it is interesting. The engine never forms it:

- ``jvp_growth`` (forward mode): a unit probe ``v`` is pushed through each
  ``J_t`` by ``jax.jvp``; after every step ``log ||v||`` is added to a running
  sum and ``v`` is divided by ``||v||``. The running sum is
  ``log ||J_t ... J_1 v||`` exactly, for every prefix ``t`` in one scan, and
  no number ever exceeds the growth of one step.
- ``vjp_growth`` (reverse mode, what backprop sees): a unit cotangent ``u``
  at step T is pulled back through ``J_T, J_{T-1}, ...``, renormalised.
- ``lyapunov_spectrum``: k orthonormal tangents, re-orthonormalised by QR
  every step; the running sums of ``log |diag R|`` give the k leading
  Lyapunov exponents (Benettin et al. 1980).
- ``jacobian_singular_values``: the log singular values of the materialised
  product, by QR sweeps over the factors (the product never forms).

The forward state can overflow too. A positively homogeneous transition
(``f(c h, x) = c f(h, x)``, e.g. ReLU or linear without bias or input) has
``J(c h) = J(h)``, so its state is renormalised as well and the measurement
runs past float range; otherwise every value from ``overflow_step`` on is
NaN, never a number (XLA's ReLU backward maps a NaN state to an exact zero,
which would otherwise read as a vanishing gradient).

Norms are computed scaled (``max|v| * ||v / max|v|||``) and logs are summed
in at least float32, so float16 and bfloat16 states work too.

References:
  Benettin, Galgani, Giorgilli, Strelcyn. Lyapunov characteristic exponents
  for smooth dynamical systems. Meccanica 15, 1980.
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np

from exploding import _validation

__all__ = ["Growth", "LyapunovSpectrum", "jvp_growth", "vjp_growth",
           "lyapunov_spectrum", "jacobian_singular_values",
           "is_homogeneous"]

Transition = Callable[[Any, Any], Any]


class Growth(NamedTuple):
  """Growth of a Jacobian product along a trajectory (natural logs).

  Attributes:
    log_growth: ``(T,)`` (or ``(T, probes)``). For ``jvp_growth``,
      ``log ||J_{t+1} ... J_1 v||`` at index t; for ``vjp_growth``,
      ``log ||u J_T ... J_{t+1}||``, the gradient reaching state ``h_t``.
      NaN from ``overflow_step`` on (for ``vjp_growth``: everywhere if the
      state overflowed). Float32, or float64 for float64 states.
    log_state_norm: ``(T,)`` ``log ||h_{t+1}||``, the forward pass's growth.
    overflow_step: ``()`` int32, first t with ``h_{t+1}`` non-finite, or -1.
    native_norm: ``(T,)`` only with ``return_native=True``: the plain norm
      of the same product computed in the state's dtype with no
      renormalisation (what training computes), with its ``inf``/``0``/NaN.
    native_invalid: ``(T,)`` bool, where that native product is non-finite
      or exactly zero.
  """

  log_growth: jax.Array
  log_state_norm: jax.Array
  overflow_step: jax.Array
  native_norm: jax.Array | None = None
  native_invalid: jax.Array | None = None


class LyapunovSpectrum(NamedTuple):
  """Attributes:
    exponents: ``(k,)`` mean log growth per step, largest first.
    cumulative: ``(T, k)`` running sums of ``log |diag R_t|`` (same order).
    log_state_norm: ``(T,)``; overflow_step: ``()``; as in ``Growth``.
  """

  exponents: jax.Array
  cumulative: jax.Array
  log_state_norm: jax.Array
  overflow_step: jax.Array


def jvp_growth(f: Transition, state0: Any, xs: Any = None, *,
               length: int | None = None, key: jax.Array, probes: int = 1,
               homogeneous: bool | None = None, precision: str = "highest",
               return_native: bool = False) -> Growth:
  """Forward-mode growth ``log ||J_t ... J_1 v||`` for every prefix t.

  Args:
    f: transition ``f(state, x) -> state`` (any pytree state, one float
      dtype; ``x`` is ``None`` when ``xs`` is ``None``).
    state0: initial state ``h_0``.
    xs: per-step inputs, a pytree whose leaves have leading axis T; or
      ``None`` with ``length=T``.
    length: T when ``xs`` is ``None`` (must agree with ``xs`` otherwise).
    key: PRNG key for the probe(s), drawn in float32 then cast.
    probes: number of independent unit probes, >= 1.
    homogeneous: renormalise the state too (see module doc); ``None``
      detects it at the concrete ``state0``.
    precision: matmul precision (``"highest"`` keeps TPU from bf16 passes).
    return_native: also compute the unrenormalised native-dtype product.

  Returns:
    ``Growth``; ``log_growth`` is ``(T,)``, or ``(T, probes)`` if probes > 1.

  The compiled scan is cached on ``f`` (by equality: the same function
  object): calling with a fresh ``lambda``/``functools.partial`` each time
  recompiles every call. For many parameter settings, vmap one function
  over them (as ``ex.sweep`` does) or keep ``f`` fixed and pass what
  varies through ``xs``.

  Example:
    >>> import jax, jax.numpy as jnp, exploding as ex
    >>> f = lambda h, x: 2.0 * h
    >>> g = ex.jvp_growth(f, jnp.ones(4), length=1000, key=jax.random.key(0))
    >>> round(float(g.log_growth[-1] / jnp.log(2.0)))
    1000
  """
  probes = _validation.check_int("probes", probes, 1)
  prob = _Problem.make(f, state0, xs, length, homogeneous, "jvp_growth")
  out = _jvp_impl(prob.f, prob.vec0, xs, key, prob.length, probes,
                  prob.homogeneous, precision, return_native)
  return out._replace(log_growth=out.log_growth[:, 0]) if probes == 1 else out


def vjp_growth(f: Transition, state0: Any, xs: Any = None, *,
               length: int | None = None, key: jax.Array,
               homogeneous: bool | None = None, precision: str = "highest",
               return_native: bool = False) -> Growth:
  """Reverse-mode growth ``log ||u J_T ... J_{t+1}||`` for every t.

  A random unit cotangent ``u`` at the last state is pulled back to each
  earlier state, as backprop does, renormalised every step. Index t holds
  the gradient at ``h_t`` (t = 0 is the full product). Arguments as in
  ``jvp_growth``. Stores the T forward states (memory O(T * state)).

  Returns:
    ``Growth`` with ``log_growth`` of shape ``(T,)``.
  """
  prob = _Problem.make(f, state0, xs, length, homogeneous, "vjp_growth")
  return _vjp_impl(prob.f, prob.vec0, xs, key, prob.length, prob.homogeneous,
                   precision, return_native)


def lyapunov_spectrum(f: Transition, state0: Any, xs: Any = None, *,
                      length: int | None = None, key: jax.Array, k: int = 1,
                      homogeneous: bool | None = None,
                      precision: str = "highest") -> LyapunovSpectrum:
  """The k leading Lyapunov exponents by QR re-orthonormalisation.

  ``Q_t R_t = J_t Q_{t-1}`` with ``Q_0`` a random orthonormal ``(n, k)``
  frame; ``exponents = sum_t log|diag R_t| / T``. For a linear map
  ``h -> A h`` these are the log moduli of A's k largest eigenvalues.

  Resolution: the QR's backward error is about ``eps ||J_t Q_{t-1}||``, so
  a one-step stretch below that is rounding noise. An exactly zero entry of
  ``diag R_t`` is counted at that resolution, ``log(eps ||R_t||_F)``, not as
  ``log 0``. It comes from an exactly zero row of ``J_t`` (a dead ReLU unit;
  a tanh with ``|preactivation| > ~9`` in float32, whose ``1 - tanh^2``
  rounds to 0 although the true derivative is tiny but not 0), and whether
  rounding leaves that entry at 0 (``-inf`` for the rest of the run) or at
  ~eps depends on which unit it is. Exponents are therefore finite
  unless some ``J_t Q_{t-1}`` is exactly zero; nonzero entries are used as
  they are. Exponents near or below ``log eps + log ||J_t||`` (float32:
  -15.9 plus that) are unresolved: for an exactly singular product (dead
  ReLU units, a zero eigenvalue) the true value is ``-inf``, for a
  float32-saturated tanh a finite number (compare with float64).

  Args:
    k: number of exponents, 1 <= k <= state size. Others as ``jvp_growth``.

  Returns:
    ``LyapunovSpectrum``.
  """
  prob = _Problem.make(f, state0, xs, length, homogeneous, "lyapunov_spectrum")
  k = _validation.check_int("k", k, 1)
  if k > prob.vec0.size:
    raise ValueError(f"k must be <= the state size {prob.vec0.size}, got {k}")
  return _lyapunov_impl(prob.f, prob.vec0, xs, key, prob.length, k,
                        prob.homogeneous, precision)


def jacobian_singular_values(f: Transition, state0: Any, xs: Any = None, *,
                             length: int | None = None, sweeps: int = 100,
                             homogeneous: bool | None = None,
                             precision: str = "highest") -> jax.Array:
  """Log singular values of ``J_T ... J_1``, largest first.

  Materialises each ``J_t`` (small states only: T * n^2 numbers) and runs
  the QR algorithm on the product without forming it: a sweep
  ``J_t P_{t-1} = P_t S_t`` turns the product into ``P_T S_T ... S_1``; the
  next sweep runs on the transposed factors in reverse. Each sweep is one
  step of the QR iteration on ``A^T A``, so ``sum_t log|diag S_t|``
  converges to the log singular values, while their sum equals
  ``log|det A| = sum_t log|det J_t|`` at every sweep; no number ever holds
  the product.

  Args:
    sweeps: QR sweeps, >= 1 (convergence is geometric in the ratios of
      neighbouring singular values, squared, per sweep).

  Returns:
    ``(n,)`` log singular values (float32, or float64 for float64 states);
    NaN if the state overflows.
  """
  prob = _Problem.make(f, state0, xs, length, homogeneous,
                       "jacobian_singular_values")
  sweeps = _validation.check_int("sweeps", sweeps, 1)
  return _singular_impl(prob.f, prob.vec0, xs, prob.length, sweeps,
                        prob.homogeneous, precision)


def is_homogeneous(f: Transition, state0: Any, x0: Any = None) -> bool:
  """Whether ``f(c h, x0) == c f(h, x0)`` for ``c`` in {2, 1/2} at the
  concrete ``state0`` (to a dtype-dependent relative tolerance)."""
  vec0, unravel = ravel_pytree(state0)
  if not np.any(np.asarray(vec0, np.float64)):
    return False
  fv = lambda c: ravel_pytree(f(unravel(c * vec0), x0))[0]
  base = np.asarray(fv(1.0), np.float64)
  rtol = float(jnp.finfo(vec0.dtype).eps) ** 0.5
  return all(np.allclose(np.asarray(fv(c), np.float64), c * base, rtol=rtol,
                         atol=rtol * np.max(np.abs(base)) * c)
             for c in (2.0, 0.5))


# ------------------------------------------------------------------ helpers


class _Problem(NamedTuple):
  f: Callable[[jax.Array, Any], jax.Array]   # on the flat state vector
  vec0: jax.Array
  length: int
  homogeneous: bool

  @staticmethod
  def make(f, state0, xs, length, homogeneous, caller) -> "_Problem":
    if not callable(f):
      raise TypeError(f"{caller}: f must be callable f(state, x) -> state")
    leaves = jax.tree.leaves(state0)
    if not leaves:
      raise ValueError(f"{caller}: state0 must hold at least one array")
    dtypes = {jnp.asarray(l).dtype for l in leaves}
    if len(dtypes) != 1 or not jnp.issubdtype(dtypes.pop(), jnp.floating):
      raise TypeError(f"{caller}: state0 must have one floating dtype, got "
                      f"{sorted(str(jnp.asarray(l).dtype) for l in leaves)}")
    _validation.check_finite("state0", state0)
    _validation.check_finite("xs", xs)
    if xs is None:
      if length is None:
        raise ValueError(f"{caller}: give xs or length")
      length = _validation.check_int("length", length, 1)
      x0 = None
    else:
      lens = {jnp.shape(l)[0] if jnp.ndim(l) else None
              for l in jax.tree.leaves(xs)}
      if len(lens) != 1 or None in lens:
        raise ValueError(f"{caller}: every leaf of xs needs the same leading "
                         f"axis T, got {lens}")
      T = lens.pop()
      if length is not None and length != T:
        raise ValueError(f"{caller}: length={length} disagrees with xs's "
                         f"leading axis {T}")
      length = _validation.check_int("length (xs's leading axis)", T, 1)
      x0 = jax.tree.map(lambda a: a[0], xs)
    vec0, unravel = ravel_pytree(state0)
    out = jax.eval_shape(f, state0, x0)
    if jax.tree.structure(out) != jax.tree.structure(state0) or any(
        o.shape != jnp.shape(s)
        for o, s in zip(jax.tree.leaves(out), leaves)):
      raise ValueError(f"{caller}: f(state, x) must return the state's "
                       f"structure and shapes; state0 {jax.tree.map(jnp.shape, state0)}"
                       f" -> {jax.tree.map(lambda o: o.shape, out)}")
    if any(o.dtype != vec0.dtype for o in jax.tree.leaves(out)):
      raise TypeError(f"{caller}: f returned dtype "
                      f"{[str(o.dtype) for o in jax.tree.leaves(out)]} for a "
                      f"{vec0.dtype} state; cast inside f")
    if homogeneous is None:
      homogeneous = (not _validation.is_traced((state0, x0))
                     and is_homogeneous(f, state0, x0))
    flat_f = _FlatTransition(f, unravel, (jax.tree.structure(state0),
                                          tuple(jnp.shape(l) for l in leaves),
                                          vec0.dtype))
    return _Problem(flat_f, vec0, length, bool(homogeneous))


class _FlatTransition:
  """``f`` on the raveled state. Equal (so jit reuses its compilation) when
  ``f`` and the state's structure, shapes and dtype are equal."""

  def __init__(self, f, unravel, signature):
    self.f, self.unravel, self.signature = f, unravel, signature

  def __call__(self, v, x):
    return ravel_pytree(self.f(self.unravel(v), x))[0]

  def __eq__(self, other):
    return (isinstance(other, _FlatTransition) and self.f == other.f
            and self.signature == other.signature)

  def __hash__(self):
    return hash((self.f, self.signature))


def acc_dtype(dtype) -> jnp.dtype:
  """Dtype for logs and norms: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def log_norm(v: jax.Array, axis=None) -> jax.Array:
  """Scaled ``log ||v||`` in at least float32; -inf for zero, NaN/inf for a
  non-finite ``v``."""
  v = v.astype(acc_dtype(v.dtype))
  m = jnp.max(jnp.abs(v), axis=axis, keepdims=True)
  safe = jnp.where(m > 0, m, 1)
  s = jnp.sum(jnp.square(v / safe), axis=axis, keepdims=True)
  out = jnp.log(m) + 0.5 * jnp.log(jnp.where(m > 0, s, 1))
  return jnp.squeeze(out, axis) if axis is not None else out.reshape(())


def normalize(v: jax.Array, axis=None) -> tuple[jax.Array, jax.Array]:
  """``(v / ||v||, log ||v||)``; a zero ``v`` stays zero (log -inf).

  In float16/bfloat16 the rounded unit vector's norm differs from one by
  ~1e-3; that error is folded into the returned log (measured against the
  vector actually propagated), so it does not accumulate over steps.
  """
  ln = log_norm(v, axis)
  scale = jnp.exp(jnp.expand_dims(ln, axis) if axis is not None else ln)
  scale = jnp.where(scale > 0, scale, 1)
  unit = (v.astype(ln.dtype) / scale).astype(v.dtype)
  if jnp.dtype(v.dtype).itemsize < 4:
    ln = ln - jnp.where(jnp.isfinite(ln), log_norm(unit, axis), 0)
  return unit, ln


def kahan_add(total, comp, x):
  """Compensated summation (Kahan 1965): ``total + x`` with the rounding
  error carried in ``comp``, so a float32 sum of thousands of per-step logs
  stays accurate to a few ulps. Infinite terms pass through."""
  y = x - comp
  t = total + y
  comp = jnp.where(jnp.isfinite(t), (t - total) - y, 0).astype(t.dtype)
  return t, comp


def overflow_index(log_state_norm: jax.Array) -> jax.Array:
  """First index with a NaN or +inf state norm along axis 0, or -1."""
  bad = ~(log_state_norm < jnp.inf)
  return jnp.where(jnp.any(bad, 0), jnp.argmax(bad, 0), -1).astype(jnp.int32)


def _mask_after(values, overflow_step):
  t = jnp.arange(values.shape[0]).reshape((-1,) + (1,) * (values.ndim - 1))
  bad = (overflow_step >= 0) & (t >= overflow_step)
  return jnp.where(bad, jnp.nan, values)


def _renormalize_state(h, homogeneous, log_scale):
  """Returns ``(h, log_scale, log ||h_true||)``; a homogeneous state is
  divided by its norm, whose log is summed in ``log_scale``, a
  ``(total, compensation)`` pair."""
  ln = log_norm(h)
  if homogeneous:
    h, _ = normalize(h)
    log_scale = kahan_add(*log_scale, ln)
    return h, log_scale, log_scale[0]
  return h, log_scale, ln


def _is_float(x):
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _zero_scale(dtype):
  return jnp.zeros((), dtype), jnp.zeros((), dtype)


def probe_normals(key, n, cols):
  """The float32 ``N(0, 1)`` draws behind ``_probe(key, n, cols, .)``; a
  caller may draw them outside the engine's program and pass them as
  ``key`` (``ex.sweep`` does: its scan program then holds no RNG)."""
  return jax.random.normal(key, (n, cols), jnp.float32)


def _probe(key, n, cols, dtype):
  """Unit columns: drawn in float32 (every dtype sees the same probe), then
  normalised in ``acc_dtype(dtype)`` and cast to ``dtype``. ``key`` is a
  PRNG key or its ``probe_normals``."""
  q = key if _is_float(key) else probe_normals(key, n, cols)
  q = q.astype(acc_dtype(dtype))
  return (q / jnp.linalg.norm(q, axis=0, keepdims=True)).astype(dtype)


_static = ("f", "length", "probes", "homogeneous", "precision", "native")


def _jvp_core(f, vec0, xs, key, length, probes, homogeneous, precision,
              native, unroll=1):
  """``unroll`` is ``lax.scan``'s (results are bit-identical)."""
  with jax.default_matmul_precision(precision):
    acc = acc_dtype(vec0.dtype)
    V = _probe(key, vec0.size, probes, vec0.dtype)

    def advance(h, x, V):
      h, lin = jax.linearize(lambda y: f(y, x), h)
      return h, jax.vmap(lin, 1, 1)(V)

    def body(carry, x):
      h, V, scale, total, comp = carry
      h, Vn = advance(h, x, V)
      h, scale, lh = _renormalize_state(h, homogeneous, scale)
      V, lg = normalize(Vn, axis=0)
      total, comp = kahan_add(total, comp, lg)
      return (h, V, scale, total, comp), (total, lh)

    zeros = jnp.zeros(probes, acc)
    init = (vec0, V, _zero_scale(acc), zeros, zeros)
    _, (lg, lh) = jax.lax.scan(body, init, xs, length=length, unroll=unroll)
    step = overflow_index(lh)
    out = Growth(_mask_after(lg, step), lh, step)
    if native:
      def nbody(carry, x):
        h, v = carry
        h, v = jax.jvp(lambda y: f(y, x), (h,), (v,))
        return (h, v), _native_norm(v)
      _, (nn, bad) = jax.lax.scan(nbody, (vec0, V[:, 0]), xs, length=length)
      out = out._replace(native_norm=nn, native_invalid=bad)
    return out


_jvp_impl = jax.jit(_jvp_core, static_argnames=_static)


def _native_norm(v):
  """The plain norm in the native dtype, as an optimiser would compute it."""
  n = jnp.sqrt(jnp.sum(jnp.square(v)))
  return n, ~jnp.isfinite(n) | (n == 0)


def _vjp_core(f, vec0, xs, key, length, homogeneous, precision, native):
  with jax.default_matmul_precision(precision):
    acc = acc_dtype(vec0.dtype)

    def fwd(carry, x):
      h, scale = carry
      h_next, scale, lh = _renormalize_state(f(h, x), homogeneous, scale)
      return (h_next, scale), (h, lh)

    _, (hs, lh) = jax.lax.scan(fwd, (vec0, _zero_scale(acc)), xs,
                               length=length)
    u = _probe(key, vec0.size, 1, vec0.dtype)[:, 0]

    def bwd(carry, hx):
      u, total, comp = carry
      h, x = hx
      u = jax.vjp(lambda y: f(y, x), h)[1](u)[0]
      u, lg = normalize(u)
      total, comp = kahan_add(total, comp, lg)
      return (u, total, comp), total

    zero = jnp.zeros((), acc)
    _, lg = jax.lax.scan(bwd, (u, zero, zero), (hs, xs), reverse=True)
    step = overflow_index(lh)
    out = Growth(jnp.where(step >= 0, jnp.nan, lg), lh, step)
    if native:
      def nfwd(h, x):
        return f(h, x), h
      _, hs_native = jax.lax.scan(nfwd, vec0, xs, length=length)

      def nbwd(u, hx):
        h, x = hx
        u = jax.vjp(lambda y: f(y, x), h)[1](u)[0]
        return u, _native_norm(u)
      _, (nn, bad) = jax.lax.scan(nbwd, u, (hs_native, xs), reverse=True)
      out = out._replace(native_norm=nn, native_invalid=bad)
    return out


_vjp_impl = jax.jit(_vjp_core, static_argnames=_static[:2] + _static[3:])


def _lyapunov_core(f, vec0, xs, key, length, k, homogeneous, precision):
  with jax.default_matmul_precision(precision):
    acc = acc_dtype(vec0.dtype)
    Q = jnp.linalg.qr(_probe(key, vec0.size, k, acc))[0]

    def body(carry, x):
      h, Q, scale, total, comp = carry
      h, lin = jax.linearize(lambda y: f(y, x), h)
      JQ = jax.vmap(lin, 1, 1)(Q.astype(vec0.dtype))
      h, scale, lh = _renormalize_state(h, homogeneous, scale)
      Q, R = jnp.linalg.qr(JQ.astype(acc))
      # An exact zero (a zero row of J) reads as the QR's resolution
      # eps ||R||, not log 0: -inf only where J Q == 0 (see docstring).
      d = jnp.abs(jnp.diagonal(R))
      floor = jnp.log(jnp.finfo(acc).eps) + log_norm(R)
      total, comp = kahan_add(total, comp,
                              jnp.where(d == 0, floor, jnp.log(d)))
      return (h, Q, scale, total, comp), (total, lh)

    zeros = jnp.zeros(k, acc)
    init = (vec0, Q, _zero_scale(acc), zeros, zeros)
    _, (cum, lh) = jax.lax.scan(body, init, xs, length=length)
    step = overflow_index(lh)
    cum = _mask_after(cum, step)
    order = jnp.argsort(-jnp.nan_to_num(cum[-1], nan=-jnp.inf))
    cum = cum[:, order]
    return LyapunovSpectrum(cum[-1] / length, cum, lh, step)


_lyapunov_impl = jax.jit(_lyapunov_core, static_argnames=(
    "f", "length", "k", "homogeneous", "precision"))


def _singular_core(f, vec0, xs, length, sweeps, homogeneous, precision):
  with jax.default_matmul_precision(precision):
    acc = acc_dtype(vec0.dtype)

    def fwd(carry, x):
      h, scale = carry
      J = jax.jacfwd(lambda y: f(y, x))(h).astype(acc)
      h, scale, lh = _renormalize_state(f(h, x), homogeneous, scale)
      return (h, scale), (J, lh)

    _, (Js, lh) = jax.lax.scan(fwd, (vec0, _zero_scale(acc)), xs,
                               length=length)

    def qr_sweep(factors):
      def body(P, J):
        P, S = jnp.linalg.qr(J @ P)
        return P, S
      eye = jnp.eye(vec0.size, dtype=acc)
      _, S = jax.lax.scan(body, eye, factors)
      return S

    def logs_of(S):
      return jnp.sum(jnp.log(jnp.abs(jnp.diagonal(S, axis1=1, axis2=2))), 0)

    def more(carry):
      i, _, change = carry
      return (i < sweeps) & (change > tol)

    def sweep_once(carry):
      i, S, _ = carry
      S_new = qr_sweep(jnp.swapaxes(S[::-1], 1, 2))
      change = jnp.max(jnp.abs(logs_of(S_new) - logs_of(S)))
      return i + 1, S_new, jnp.nan_to_num(change, nan=0.0)

    # Stop once the log singular values move less than ~100 ulps of their
    # scale, or after ``sweeps``.
    S0 = qr_sweep(Js)
    tol = 100 * jnp.finfo(acc).eps * (1 + jnp.max(jnp.abs(logs_of(S0))))
    _, S, _ = jax.lax.while_loop(more, sweep_once,
                                 (1, S0, jnp.asarray(jnp.inf, acc)))
    logs = logs_of(S)
    logs = jnp.sort(logs)[::-1]
    return jnp.where(overflow_index(lh) >= 0, jnp.nan, logs)


_singular_impl = jax.jit(_singular_core, static_argnames=(
    "f", "length", "sweeps", "homogeneous", "precision"))
