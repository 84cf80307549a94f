"""The engine: growth of Jacobian products, measured in log space.

A transition ``step(params, state, x) -> state`` applied T times has the
end-to-end Jacobian ``dh_T/dh_0 = J_T ... J_1`` with
``J_t = d step(params, h_{t-1}, x_t) / dh``. A product of T factors slightly
above or below one overflows or underflows in floating point long before it
is interesting. The engine never forms it:

- ``jvp_growth`` (forward mode): a unit probe ``v`` is pushed through each
  ``J_t``; after every step ``log ||v||`` is added to a running sum and ``v``
  is divided by ``||v||``. The running sum is ``log ||J_t ... J_1 v||``
  exactly, for every prefix ``t`` in one scan.
- ``vjp_growth`` (reverse mode, what backprop sees): a unit cotangent ``u``
  at step T is pulled back through ``J_T, J_{T-1}, ...``, renormalised.
- ``lyapunov_spectrum``: k orthonormal tangents, re-orthonormalised by QR
  every step; the running sums of ``log |diag R|`` give the k leading
  Lyapunov exponents (Benettin et al. 1980).
- ``jacobian_singular_values``: the log singular values of the materialised
  product, by QR sweeps over the factors (the product never forms).

**Parameters are data.** ``params`` is a pytree of arrays and always a
dynamic argument: every function here runs inside a user's ``jax.jit``,
``jax.vmap`` and (for growth) ``jax.grad``, gives the same numbers there as
eagerly, and a new params value never recompiles. The compiled program is
keyed on ``step`` (the same function object) and the state's structure,
shapes and dtype: define ``step`` once, pass what varies through ``params``.

The forward state can overflow too. A positively homogeneous transition
(``step(p, c h, x) = c step(p, h, x)``, c > 0: ReLU or linear, no bias, no
input) has ``J(c h) = J(h)``, so its state may be renormalised and the
measurement runs past float range. Homogeneity is declared, never guessed:
``homogeneous`` is a bool, or a function ``params -> bool`` (traced; e.g.
``lambda p: p.bias_scale == 0``) decided per point under ``vmap``. Otherwise
every value from ``overflow_step`` on is NaN, never a number (XLA's ReLU
backward maps a NaN state to an exact zero, which would read as vanishing).

All four run on the package's one batched core (``_core.propagate``).

References:
  Benettin, Galgani, Giorgilli, Strelcyn. Lyapunov characteristic exponents
  for smooth dynamical systems. Meccanica 15, 1980.
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from exploding import _core, _validation

__all__ = ["Growth", "LyapunovSpectrum", "jvp_growth", "vjp_growth",
           "lyapunov_spectrum", "jacobian_singular_values"]

Step = Callable[[Any, Any, Any], Any]


class Growth(NamedTuple):
  """Growth of a Jacobian product along a trajectory (natural logs).

  Attributes:
    log_growth: ``(T,)`` (or ``(T, probes)``); index t holds t + 1 factors.
      For ``jvp_growth``, ``log ||J_{t+1} ... J_1 v||``; for ``vjp_growth``,
      ``log ||u J_T ... J_{T-t}||``, the gradient after t + 1 steps of
      backprop. NaN from ``overflow_step`` on (for ``vjp_growth``:
      everywhere if the state overflowed). Float32, or float64 for float64
      states.
    log_state_norm: ``(T,)`` ``log ||h_{t+1}||``, the forward pass's growth.
    overflow_step: ``()`` int32, first t with ``h_{t+1}`` non-finite, or -1.
    native_norm: ``(T,)`` only with ``return_native=True``: the plain norm
      of the same product computed in the state's dtype with no
      renormalisation (what training computes), with its ``inf``/``0``/NaN;
      same indexing as ``log_growth``.
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


def jvp_growth(step: Step, params: Any, state0: Any, xs: Any = None, *,
               length: int | None = None, key: Any, probes: int = 1,
               homogeneous: Any = False, precision: str = "highest",
               return_native: bool = False) -> Growth:
  """Forward-mode growth ``log ||J_t ... J_1 v||`` for every prefix t.

  Args:
    step: transition ``step(params, state, x) -> state`` (any pytree state
      of one float dtype; ``x`` is ``None`` when ``xs`` is ``None``).
    params: pytree of arrays (dynamic: new values never recompile).
    state0: initial state ``h_0``.
    xs: per-step inputs, a pytree whose leaves have leading axis T; or
      ``None`` with ``length=T``.
    length: T when ``xs`` is ``None`` (must agree with ``xs`` otherwise).
    key: PRNG key (or int seed) for the probe(s), drawn in float32 then cast.
    probes: number of independent unit probes, >= 1.
    homogeneous: renormalise the state too (see module doc): a bool, or
      ``params -> bool``.
    precision: matmul precision (``"highest"`` keeps TPU from bf16 passes).
    return_native: also compute the unrenormalised native-dtype product.

  Returns:
    ``Growth``; ``log_growth`` is ``(T,)``, or ``(T, probes)`` if probes > 1.

  Example:
    >>> import jax, jax.numpy as jnp, exploding as ex
    >>> step = lambda p, h, x: p * h
    >>> g = ex.jvp_growth(step, 2.0, jnp.ones(4), length=1000, key=0,
    ...                   homogeneous=True)   # linear: renormalise the state
    >>> round(float(g.log_growth[-1] / jnp.log(2.0)))
    1000
  """
  probes = _validation.check_int("probes", probes, 1)
  pr = _Problem.make(step, params, state0, xs, length, homogeneous, precision,
                     "jvp_growth")
  out = _jvp_program(pr.flat, params, pr.vec0, xs, pr.key(key), pr.hom,
                     length=pr.length, probes=probes, hom_static=pr.hom_static,
                     precision=precision, native=bool(return_native))
  return out._replace(log_growth=out.log_growth[:, 0]) if probes == 1 else out


def vjp_growth(step: Step, params: Any, state0: Any, xs: Any = None, *,
               length: int | None = None, key: Any, homogeneous: Any = False,
               precision: str = "highest",
               return_native: bool = False) -> Growth:
  """Reverse-mode growth ``log ||u J_T ... J_{T-t}||`` for every t.

  A random unit cotangent ``u`` at the last state is pulled back to each
  earlier state, as backprop does, renormalised every step. Index t holds
  t + 1 factors (the gradient t + 1 steps before the end), as in
  ``jvp_growth``. Arguments as in ``jvp_growth``. Stores the T forward
  states (memory O(T * state)).

  Returns:
    ``Growth`` with ``log_growth`` of shape ``(T,)``.
  """
  pr = _Problem.make(step, params, state0, xs, length, homogeneous, precision,
                     "vjp_growth")
  return _vjp_program(pr.flat, params, pr.vec0, xs, pr.key(key), pr.hom,
                      length=pr.length, hom_static=pr.hom_static,
                      precision=precision, native=bool(return_native))


def lyapunov_spectrum(step: Step, params: Any, state0: Any, xs: Any = None,
                      *, length: int | None = None, key: Any, k: int = 1,
                      homogeneous: Any = False,
                      precision: str = "highest") -> LyapunovSpectrum:
  """The k leading Lyapunov exponents by QR re-orthonormalisation.

  ``Q_t R_t = J_t Q_{t-1}`` with ``Q_0`` a random orthonormal ``(n, k)``
  frame; ``exponents = sum_t log|diag R_t| / T``. For a linear map
  ``h -> A h`` these are the log moduli of A's k largest eigenvalues.

  Resolution: the QR's backward error is about ``eps ||J_t Q_{t-1}||``, so
  a one-step stretch below that is rounding noise. An exactly zero entry of
  ``diag R_t`` (an exactly zero row of ``J_t``: a dead ReLU unit, a tanh
  saturated to 1 in float32) counts at that resolution,
  ``log(eps ||R_t||_F)``, not ``log 0``; exponents are finite unless some
  ``J_t Q_{t-1}`` is exactly zero. Exponents near or below
  ``log eps + log ||J_t||`` (float32: -15.9 plus that) are unresolved.

  Args:
    k: number of exponents, 1 <= k <= state size. Others as ``jvp_growth``.

  Returns:
    ``LyapunovSpectrum``.
  """
  pr = _Problem.make(step, params, state0, xs, length, homogeneous, precision,
                     "lyapunov_spectrum")
  k = _validation.check_int("k", k, 1)
  if k > pr.vec0.size:
    raise ValueError(f"k must be <= the state size {pr.vec0.size}, got {k}")
  return _lyapunov_program(pr.flat, params, pr.vec0, xs, pr.key(key), pr.hom,
                           length=pr.length, k=k, hom_static=pr.hom_static,
                           precision=precision)


def jacobian_singular_values(step: Step, params: Any, state0: Any,
                             xs: Any = None, *, length: int | None = None,
                             sweeps: int = 100, homogeneous: Any = False,
                             precision: str = "highest") -> jax.Array:
  """Log singular values of ``J_T ... J_1``, largest first.

  Materialises each ``J_t`` (small states only: T * n^2 numbers) and runs
  the QR algorithm on the product without forming it: a sweep
  ``J_t P_{t-1} = P_t S_t`` turns the product into ``P_T S_T ... S_1``; the
  next sweep runs on the transposed factors in reverse. Each sweep is one
  step of the QR iteration on ``A^T A``, so ``sum_t log|diag S_t|``
  converges to the log singular values, while their sum equals
  ``log|det A| = sum_t log|det J_t|`` at every sweep. An exactly singular
  product (a dead ReLU unit) has ``-inf`` entries; the others converge.

  Args:
    sweeps: QR sweeps, >= 1 (convergence is geometric in the ratios of
      neighbouring singular values, squared, per sweep).

  Returns:
    ``(n,)`` log singular values (float32, or float64 for float64 states);
    NaN if the state overflows.
  """
  pr = _Problem.make(step, params, state0, xs, length, homogeneous, precision,
                     "jacobian_singular_values")
  sweeps = _validation.check_int("sweeps", sweeps, 1)
  return _singular_program(pr.flat, params, pr.vec0, xs, pr.hom,
                           length=pr.length, sweeps=sweeps,
                           hom_static=pr.hom_static, precision=precision)


# ------------------------------------------------------------ validation


class _Problem(NamedTuple):
  flat: _core.Flat
  vec0: jax.Array
  length: int
  hom_static: bool | None      # a Python bool, or None: decided from params
  hom: jax.Array | None        # () bool, traced, when hom_static is None

  @staticmethod
  def make(step, params, state0, xs, length, homogeneous, precision,
           caller) -> "_Problem":
    if not callable(step):
      raise TypeError(f"{caller}: step must be callable "
                      "step(params, state, x) -> state")
    check_precision(precision)
    leaves = jax.tree.leaves(state0)
    if not leaves:
      raise ValueError(f"{caller}: state0 must hold at least one array")
    dtypes = {jnp.result_type(l) for l in leaves}
    if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)),
                                              jnp.floating):
      raise TypeError(f"{caller}: state0 must have one real floating dtype, "
                      f"got {sorted(str(jnp.result_type(l)) for l in leaves)}")
    if sum(int(np.prod(jnp.shape(l), dtype=int)) for l in leaves) == 0:
      raise ValueError(f"{caller}: state0 must have at least one entry")
    _validation.check_finite("state0", state0)
    _validation.check_finite("params", params)
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
    flat = _core.Flat.of(step, state0)
    out = jax.eval_shape(step, params, state0, x0)
    if jax.tree.structure(out) != flat.treedef or any(
        o.shape != s for o, s in zip(jax.tree.leaves(out), flat.shapes)):
      raise ValueError(
          f"{caller}: step(params, state, x) must return the state's "
          f"structure and shapes; state0 {jax.tree.map(jnp.shape, state0)} "
          f"-> {jax.tree.map(lambda o: o.shape, out)}")
    if any(o.dtype != flat.dtype for o in jax.tree.leaves(out)):
      raise TypeError(f"{caller}: step returned dtype "
                      f"{[str(o.dtype) for o in jax.tree.leaves(out)]} for a "
                      f"{flat.dtype} state; cast inside step")
    hom_static, hom = homogeneity(homogeneous, params)
    return _Problem(flat, flat.ravel(state0), length, hom_static, hom)

  @staticmethod
  def key(key):
    return as_key(key)


PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32",
              "float32")


def check_precision(precision):
  """``precision`` must be a name ``jax.default_matmul_precision`` takes."""
  if not isinstance(precision, str) or precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {list(PRECISIONS)}, got "
                     f"{precision!r}")


def homogeneity(homogeneous, params):
  """``(static, traced)``: a Python bool as is, or ``homogeneous(params)``
  as a traced () bool (the static part ``None``)."""
  if isinstance(homogeneous, (bool, np.bool_)):
    return bool(homogeneous), None
  if callable(homogeneous):
    h = jnp.asarray(homogeneous(params))
    if h.shape != () or h.dtype != jnp.bool_:
      raise TypeError(f"homogeneous(params) must return a () bool, got "
                      f"{h.dtype}{list(h.shape)}")
    return None, h
  raise TypeError("homogeneous must be a bool or a function params -> bool, "
                  f"got {homogeneous!r}")


def as_key(key):
  """A typed PRNG key from a key, raw ``uint32`` key data or an int seed."""
  if isinstance(key, (bool, np.bool_)):
    raise TypeError(f"key must be a PRNG key or an int seed, got {key!r}")
  if isinstance(key, (int, np.integer)):
    if not 0 <= int(key) < 2**63:
      raise ValueError(f"key must be an int in [0, 2**63), got {key}")
    return jax.random.key(int(key))
  arr = key if isinstance(key, jax.Array) else np.asarray(key)
  if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
    return key
  if arr.dtype == np.uint32 and arr.shape == (2,):
    return jax.random.wrap_key_data(jnp.asarray(arr))
  raise TypeError("key must be a PRNG key (jax.random.key), raw uint32 key "
                  f"data of shape (2,) or an int seed, got {arr.dtype}"
                  f"{list(arr.shape)}")


# ------------------------------------------------------------ programs


def probe_normals(key, size, cols):
  """The float32 ``N(0, 1)`` draws behind the probes, ``(cols, size)``
  (drawn as ``(size, cols)`` columns)."""
  return jax.random.normal(key, (size, cols), jnp.float32).T


def _hom(hom_static, hom):
  return hom_static if hom_static is not None else hom[None]


_STATIC = ("length", "hom_static", "precision")


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=_STATIC + ("probes", "native"))
def _jvp_program(flat, params, vec0, xs, key, hom, *, length, probes,
                 hom_static, precision, native):
  with jax.default_matmul_precision(precision):
    V = _core.unit_probes(probe_normals(key, vec0.size, probes), vec0.dtype)
    out = _core.propagate(_core.linearized_advance(flat, params, {}),
                          vec0[None], V[None], xs, length=length,
                          homogeneous=_hom(hom_static, hom))
    g = Growth(out["log_growth"][:, 0], out["log_state_norm"][:, 0],
               out["overflow_step"][0])
    if native:
      def nbody(carry, x):
        h, v = carry
        h, v = jax.jvp(lambda y: flat(params, y, x), (h,), (v,))
        return (h, v), _native_norm(v)
      _, (nn, bad) = jax.lax.scan(nbody, (vec0, V[0]), xs, length=length)
      g = g._replace(native_norm=nn, native_invalid=bad)
    return g


def _native_norm(v):
  """The plain norm in the native dtype, as an optimiser would compute it."""
  n = jnp.sqrt(jnp.sum(jnp.square(v)))
  return n, ~jnp.isfinite(n) | (n == 0)


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=_STATIC + ("native",))
def _vjp_program(flat, params, vec0, xs, key, hom, *, length, hom_static,
                 precision, native):
  with jax.default_matmul_precision(precision):
    fwd = _core.propagate(_core.linearized_advance(flat, params, {}),
                          vec0[None], None, xs, length=length,
                          homogeneous=_hom(hom_static, hom), keep_states=True)
    U = _core.unit_probes(probe_normals(key, vec0.size, 1), vec0.dtype)
    bwd = _core.propagate(_core.pullback_advance(flat, params, {}), None,
                          U[None], (fwd["states"], xs), length=length,
                          homogeneous=False, reverse=True)
    step = fwd["overflow_step"][0]
    lg = bwd["log_growth"][::-1, 0, 0]
    g = Growth(jnp.where(step >= 0, jnp.nan, lg),
               fwd["log_state_norm"][:, 0], step)
    if native:
      def nfwd(h, x):
        return flat(params, h, x), h
      _, hs = jax.lax.scan(nfwd, vec0, xs, length=length)

      def nbwd(u, hx):
        h, x = hx
        u = jax.vjp(lambda y: flat(params, y, x), h)[1](u)[0]
        return u, _native_norm(u)
      _, (nn, bad) = jax.lax.scan(nbwd, U[0], (hs, xs), reverse=True)
      g = g._replace(native_norm=nn[::-1], native_invalid=bad[::-1])
    return g


def initial_frame(normals, dtype):
  """``(k, d)`` orthonormal rows from ``(k, d)`` float32 normals."""
  acc = _core.acc_dtype(dtype)
  q = _core.unit_probes(normals, acc)
  return jnp.swapaxes(_core._batched_qr(jnp.swapaxes(q, -1, -2))[0], -1, -2)


def order_spectrum(cum, length):
  """``cum`` ``(T, ..., k)`` reordered largest final value first; returns
  ``(exponents, cumulative)``."""
  order = jnp.argsort(-jnp.nan_to_num(cum[-1], nan=-jnp.inf), axis=-1)
  cum = jnp.take_along_axis(cum, order[None], axis=-1)
  return cum[-1] / length, cum


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=_STATIC + ("k",))
def _lyapunov_program(flat, params, vec0, xs, key, hom, *, length, k,
                      hom_static, precision):
  with jax.default_matmul_precision(precision):
    Q = initial_frame(probe_normals(key, vec0.size, k), vec0.dtype)
    out = _core.propagate(_core.linearized_advance(flat, params, {}),
                          vec0[None], Q[None], xs, length=length,
                          homogeneous=_hom(hom_static, hom), tangent="qr")
    exponents, cum = order_spectrum(out["log_growth"][:, 0], length)
    return LyapunovSpectrum(exponents, cum, out["log_state_norm"][:, 0],
                            out["overflow_step"][0])


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=_STATIC + ("sweeps",))
def _singular_program(flat, params, vec0, xs, hom, *, length, sweeps,
                      hom_static, precision):
  with jax.default_matmul_precision(precision):
    acc = _core.acc_dtype(vec0.dtype)

    def jac(H, V, x):
      del V
      f = lambda y: flat(params, y, x)
      return jax.vmap(f)(H), jax.vmap(jax.jacfwd(f))(H).astype(acc)

    fwd = _core.propagate(lambda H, V, x: (jac(H, V, x)[0], None),
                          vec0[None], None, xs, length=length,
                          homogeneous=_hom(hom_static, hom), keep_states=True)
    Js = jax.vmap(lambda h, x: jac(h, None, x)[1])(fwd["states"], xs)[:, 0]

    def qr_sweep(factors):
      def body(P, J):
        P, S = jnp.linalg.qr(J @ P)
        return P, S
      _, S = jax.lax.scan(body, jnp.eye(vec0.size, dtype=acc), factors)
      return S

    def logs_of(S):
      return jnp.sum(jnp.log(jnp.abs(jnp.diagonal(S, axis1=1, axis2=2))), 0)

    def change_of(a, b):
      # Exact zeros (-inf) that stay -inf have converged; one that appears
      # or disappears has not.
      same = (a == b) | (jnp.isneginf(a) & jnp.isneginf(b))
      return jnp.max(jnp.where(same, 0, jnp.abs(a - b)))

    def more(carry):
      i, _, change = carry
      return (i < sweeps) & ~(change <= tol)

    def sweep_once(carry):
      i, S, _ = carry
      S_new = qr_sweep(jnp.swapaxes(S[::-1], 1, 2))
      return i + 1, S_new, change_of(logs_of(S_new), logs_of(S))

    # Stop once the log singular values move less than ~100 ulps of their
    # scale, or after ``sweeps``.
    S0 = qr_sweep(Js)
    l0 = logs_of(S0)
    scale = jnp.max(jnp.where(jnp.isfinite(l0), jnp.abs(l0), 0))
    tol = 100 * jnp.finfo(acc).eps * (1 + scale)
    _, S, _ = jax.lax.while_loop(more, sweep_once,
                                 (1, S0, jnp.asarray(jnp.inf, acc)))
    logs = jnp.sort(logs_of(S))[::-1]
    return jnp.where(fwd["overflow_step"][0] >= 0, jnp.nan, logs)
