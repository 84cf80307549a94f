"""The engine's one batched core: propagate states and tangents, in log space.

Every measurement of the package is one ``lax.scan`` of this routine over a
batch of ``n`` points (one point for ``ex.jvp_growth``; a chunk of a grid
for ``ex.sweep``). Per step it

1. advances the states ``H`` (``(n, d)``, flat) and their tangents ``V``
   (``(n, p, d)``) through one transition: ``H' = f(H)``, ``JV = J V``;
2. renormalises the state where the transition is positively homogeneous
   (``f(c h) = c f(h)``, so ``J(c h) = J(h)``), accumulating ``log ||h||``;
3. renormalises the tangents (each to unit norm, or re-orthonormalised by
   QR for Lyapunov spectra) and adds their log stretch to a compensated
   (Kahan) running sum, so a float32 sum of thousands of steps stays exact
   to a few ulps and no number ever exceeds one step's growth;
4. records ``log ||h_{t+1}||``, from which the first non-finite state
   (``overflow_step``) is flagged; later values are NaN, never numbers.

``advance`` is data: the generic one linearises the user's ``step`` per
point under ``vmap`` (points share params except their knob leaves, so
``g * (W0 @ h)`` batches into a GEMM); a model may hand a fused one (the
RNN's ``[H; V] @ W0^T``, one GEMM for states and tangents of all points).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# An advance maps (H (n, d) or None, V (n, p, d) or None, x) to (H', J V).
Advance = Callable[[Any, Any, Any], tuple[Any, Any]]


def acc_dtype(dtype) -> jnp.dtype:
  """Dtype for logs and norms: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


_LN2 = 0.6931471805599453   # a Python float: weakly typed, keeps the dtype


def log_norm(v: jax.Array, axis=None) -> jax.Array:
  """Scaled ``log ||v||`` in at least float32 (``jnp.linalg.norm`` under- and
  overflows in float32 once ``|log ||v||| > ~44``) over ``axis`` (an int, a
  tuple, or None for all); -inf for zero, NaN for a non-finite ``v``."""
  v = jnp.asarray(v)
  axes = range(v.ndim) if axis is None else np.atleast_1d(axis)
  axes = tuple(int(a) % v.ndim for a in axes)
  v = jnp.moveaxis(v, axes, tuple(range(v.ndim - len(axes), v.ndim)))
  rows = v.reshape(v.shape[:v.ndim - len(axes)] + (-1,))
  return _safe_rows(rows)[0]


def _ln2_times(k, dtype):
  """``k * log 2`` for integer-valued ``k``, to full precision: the product
  with a short ``log 2`` is exact, the remainder is tiny (a plain float32
  ``k * 0.693..`` is off by up to 4e-6 at |k| = 100)."""
  hi, lo = 0.693145751953125, 1.4286068203094172e-06   # hi: 16 bits
  k = k.astype(dtype)
  return k * hi + k * lo


def _scale_limits(acc):
  """``(lo, hi, k_max)``: a row's sum of squares in ``[lo, hi]`` is exact to
  rounding (no square overflowed; flushed squares lose at most ``d * tiny /
  lo`` of it); ``2^k_max`` lifts every normal number's square above tiny."""
  if acc == jnp.float32:
    return 1e-20, 1e37, 100
  return 1e-280, 1e300, 900


def _pow2(k, acc):
  """Exactly ``2^k`` (``k`` an int array in the normal range), by bits:
  cheaper to compile and run than ``jnp.ldexp``."""
  info = jnp.finfo(acc)
  it = jnp.int32 if info.bits == 32 else jnp.int64
  bias = info.maxexp - 1
  return jax.lax.bitcast_convert_type((k.astype(it) + bias) << info.nmant,
                                      acc)


def _exponent(m, acc):
  """``floor(log2 m)`` of positive normal ``m``, by bits."""
  info = jnp.finfo(acc)
  it = jnp.int32 if info.bits == 32 else jnp.int64
  bias = info.maxexp - 1
  bits = jax.lax.bitcast_convert_type(m, it)
  return ((bits >> info.nmant) & (2 * bias + 1)) - bias


def _safe_rows(X):
  """``(log ||x||, x / ||x||)`` of every row (last axis) of ``X``, scaled by
  the exact power of two of the row's max: right for any finite row, zero
  rows give ``(-inf, 0)``, non-finite rows ``NaN``."""
  acc = acc_dtype(X.dtype)
  X = X.astype(acc)
  m = jnp.max(jnp.abs(X), axis=-1, keepdims=True)
  limit = jnp.finfo(acc).maxexp - 2                     # 126 in float32
  e = jnp.clip(_exponent(jnp.where((m > 0) & jnp.isfinite(m), m, 1), acc),
               -limit, limit)
  Y = X * _pow2(-e, acc)
  s = jnp.sum(jnp.square(Y), axis=-1, keepdims=True)
  log = jnp.where(m > 0, _ln2_times(e, acc) + 0.5 * jnp.log(s), jnp.log(m))
  log = jnp.where(jnp.isfinite(m) | (m == 0), log, jnp.nan)
  unit = Y * jnp.where(s > 0, jax.lax.rsqrt(jnp.where(s > 0, s, 1)), 0)
  return log[..., 0], unit


def row_norms(Xs, ks):
  """Log norms and unit rows of every row of each batch in ``Xs``.

  Each row is first multiplied by ``2^k`` (``ks``: int exponents carried
  from the previous step, so the scaled row sits near norm 1): one pass,
  fused with the producer, exact to rounding whenever its sum of squares is
  a normal number far from both ends of the range, which is every row on
  almost every step (tiny, vanishing states included). Only when some row
  is not (it jumped by ~2^60 in a step, became zero or non-finite for the
  first time) does the step take, as a real branch, the two-pass path
  scaled by each row's max. Rows known to be zero (``k = k_max``: any
  non-zero normal number would show) or non-finite pass as they are.

  Args:
    Xs: arrays ``(..., d)``.
    ks: int32 arrays ``Xs[i].shape[:-1]``.

  Returns:
    ``(logs, units, ks)``: ``log ||x||`` per row in ``acc_dtype`` (-inf for
    a zero row, NaN for a non-finite one), the unit rows in ``acc_dtype``
    (zero rows stay zero), and the exponents for the next step.
  """
  acc = acc_dtype(Xs[0].dtype)
  lo, hi, k_max = _scale_limits(acc)

  ss_list = []
  for X, k in zip(Xs, ks):
    Y = X.astype(acc) * _pow2(k, acc)[..., None]
    ss_list.append(jnp.sum(jnp.square(Y), axis=-1))
  ok = [((ss >= lo) & (ss <= hi)) | ((ss == 0) & (k == k_max)) | jnp.isnan(ss)
        for ss, k in zip(ss_list, ks)]
  everywhere = jnp.all(jnp.stack([jnp.all(o) for o in ok]))

  def cheap():
    logs, units = [], []
    for X, k, ss in zip(Xs, ks, ss_list):
      Y = X.astype(acc) * _pow2(k, acc)[..., None]
      logs.append(0.5 * jnp.log(ss) - _ln2_times(k, acc))
      inv = jnp.where(ss > 0, jax.lax.rsqrt(jnp.where(ss > 0, ss, 1)), 0)
      units.append(Y * inv[..., None])
    return logs, units

  def careful():
    pairs = [_safe_rows(X) for X in Xs]
    return [p[0] for p in pairs], [p[1] for p in pairs]

  logs, units = jax.lax.cond(everywhere, cheap, careful)
  new_ks = [_next_exponent(log, k_max) for log in logs]
  return logs, units, new_ks


def _next_exponent(log, k_max):
  """``k`` with ``2^k ||x|| ~ 1`` for the next step's rows: ``k_max`` for a
  zero row, 0 for a non-finite one."""
  k = jnp.clip(jnp.round(-log / _LN2), -k_max, k_max)
  k = jnp.where(log == -jnp.inf, k_max, jnp.where(jnp.isnan(log), 0, k))
  return k.astype(jnp.int32)


def kahan_add(total, comp, x):
  """Compensated summation (Kahan 1965): ``total + x`` with the rounding
  error carried in ``comp``. Infinite terms pass through."""
  y = x - comp
  t = total + y
  comp = jnp.where(jnp.isfinite(t), (t - total) - y, 0).astype(t.dtype)
  return t, comp


def overflow_index(log_state_norm: jax.Array) -> jax.Array:
  """First index with a NaN or +inf state norm along axis 0, or -1."""
  bad = ~(log_state_norm < jnp.inf)
  return jnp.where(jnp.any(bad, 0), jnp.argmax(bad, 0), -1).astype(jnp.int32)


def mask_after(values: jax.Array, overflow_step: jax.Array) -> jax.Array:
  """NaN from ``overflow_step`` on along axis 0 (``overflow_step`` has the
  shape of ``values.shape[1:]``' leading axes)."""
  t = jnp.arange(values.shape[0]).reshape((-1,) + (1,) * (values.ndim - 1))
  step = overflow_step.reshape(overflow_step.shape
                               + (1,) * (values.ndim - 1 - overflow_step.ndim))
  return jnp.where((step >= 0) & (t >= step), jnp.nan, values)


def unit_probes(normals: jax.Array, dtype) -> jax.Array:
  """``(p, d)`` unit rows from float32 normals ``(p, d)`` (every dtype sees
  the same probe: normalised in ``acc_dtype``, then cast)."""
  q = normals.astype(acc_dtype(dtype))
  return (q / jnp.linalg.norm(q, axis=-1, keepdims=True)).astype(dtype)


# ------------------------------------------------------------ the scan


def propagate(advance: Advance, H, V, xs, *, length: int, homogeneous,
              tangent: str = "norm", reverse: bool = False,
              keep_states: bool = False, unroll: int = 1, carry=None,
              finalize: bool = True):
  """Runs the core for ``length`` steps.

  Args:
    advance: ``(H, V, x) -> (H', J V)``; ``H`` is ``None`` when states come
      through ``xs`` (backprop's pull-back), ``V`` is ``None`` for a forward
      pass without tangents.
    H: ``(n, d)`` flat states, or ``None``.
    V: ``(n, p, d)`` tangents (unit rows; orthonormal for ``"qr"``), or
      ``None``.
    xs: per-step inputs (leading axis ``length``) or ``None``.
    homogeneous: Python bool, or ``(n,)`` bool array (decided per point).
    tangent: ``"norm"`` (each tangent to unit norm) or ``"qr"`` (the ``p``
      tangents re-orthonormalised; logs of ``|diag R|``).
    reverse: scan ``xs`` from the end.
    keep_states: also return the state entering each step (``(T, n, d)``).
    carry: where an earlier ``propagate(..., finalize=False)`` stopped
      (``H``, ``V`` are then ignored): a long scan run in blocks.
    finalize: flag the overflow step and mask after it; ``False`` returns
      ``(raw per-step outputs, carry)`` for the next block instead.

  Returns:
    dict with ``log_growth`` ``(T, n, p)`` running Kahan sums (if ``V``),
    ``log_state_norm`` ``(T, n)`` and ``overflow_step`` ``(n,)`` (if ``H``),
    ``states`` (if ``keep_states``).
  """
  if tangent not in ("norm", "qr"):
    raise ValueError(f"tangent must be 'norm' or 'qr', got {tangent!r}")
  if carry is None:
    carry = initial_carry(H, V, tangent)
  H, V = carry[:2]
  normed = [A is not None for A in (H, V if tangent == "norm" else None)]

  def body(carry, x):
    H, V, scale, total, comp, ks = carry
    out = {}
    if keep_states:
      out["states"] = H
    H, JV = advance(H, V, x)
    # Every norm of the step in one pass per batch and one branch.
    rows = [A for A, on in zip((H, JV), normed) if on]
    logs, units, ks = row_norms(rows, ks)
    if H is not None:
      H, scale, out["log_state_norm"] = _renormalize(
          H, homogeneous, scale, logs.pop(0), units.pop(0))
    if V is not None:
      if tangent == "norm":
        V, lg = _unit_as(units.pop(0), logs.pop(0), JV.dtype)
      else:
        V, lg = _qr_rows(JV)
      total, comp = kahan_add(total, comp, lg)
      out["log_growth"] = total
    return (H, V, scale, total, comp, ks), out

  carry, out = jax.lax.scan(body, carry, xs, length=length, reverse=reverse,
                            unroll=unroll)
  if not finalize:
    return out, carry
  if H is not None:
    out["overflow_step"] = overflow_index(out["log_state_norm"])
    if V is not None:
      out["log_growth"] = mask_after(out["log_growth"], out["overflow_step"])
  return out


def initial_carry(H, V, tangent: str = "norm"):
  """The scan's carry before step 1 (see ``propagate``): states, tangents,
  the homogeneous scale and the growth as Kahan pairs, row-norm exponents."""
  acc = acc_dtype((H if H is not None else V).dtype)
  n = (H if H is not None else V).shape[0]
  zeros = jnp.zeros((n,) + (() if V is None else (V.shape[1],)), acc)
  scale = (jnp.zeros(n, acc), jnp.zeros(n, acc))
  ks = [jnp.zeros(A.shape[:-1], jnp.int32)
        for A in (H, V if tangent == "norm" else None) if A is not None]
  return (H, V, scale, zeros, zeros, ks)


def _unit_as(unit, ln, dtype):
  """Unit rows (``acc_dtype``) cast to ``dtype``; in float16/bfloat16 the
  rounded rows' norm differs from one by ~1e-3, folded into the returned log
  (measured against the vector actually propagated), so it does not
  accumulate over steps."""
  out = unit.astype(dtype)
  if jnp.dtype(dtype).itemsize < 4:
    ln = ln - jnp.where(jnp.isfinite(ln), log_norm(out, -1), 0)
  return out, ln


def _renormalize(H, homogeneous, scale, ln, unit):
  """Rows of a homogeneous state are replaced by their unit rows (``unit``;
  ``ln`` their log norms), whose log is summed in ``scale`` (a Kahan pair);
  returns ``(H, scale, log ||h_true||)``."""
  if homogeneous is False:
    return H, scale, ln
  unit, ln = _unit_as(unit, ln, H.dtype)
  new = kahan_add(*scale, ln)
  if homogeneous is True:
    return unit, new, new[0]
  hom = jnp.asarray(homogeneous, bool)
  H = jnp.where(hom[:, None], unit, H)
  scale = tuple(jnp.where(hom, a, b) for a, b in zip(new, scale))
  return H, scale, jnp.where(hom, scale[0], ln)


def _qr_rows(JV):
  """Re-orthonormalises each point's ``p`` tangent rows (``(n, p, d)``).

  An exact zero on ``diag R`` (a zero row of J: a dead ReLU unit, a tanh
  saturated to 1 in float32) reads as the QR's resolution ``eps ||R||``,
  not ``log 0``: ``-inf`` only where ``J Q`` is exactly zero.
  """
  acc = acc_dtype(JV.dtype)
  Q, d = _batched_qr(jnp.swapaxes(JV.astype(acc), -1, -2))
  # ||R||_F = ||J Q||_F: R's columns are those of J Q in the basis Q.
  floor = jnp.log(jnp.finfo(acc).eps) + log_norm(JV, axis=(-2, -1))[..., None]
  return jnp.swapaxes(Q, -1, -2), jnp.where(d == 0, floor, jnp.log(d))


def _batched_qr(A):
  """Thin QR ``(Q, |diag R|)`` of a batch of ``(d, p)`` matrices.

  On XLA CPU with several host devices, by Gram-Schmidt with
  re-orthogonalisation (CGS2: orthogonal to working precision, like
  Householder) in plain XLA ops: jaxlib's CPU QR splits a batch over XLA's
  intra-op thread pool and blocks a pool thread until the parts finish
  (``ParallelBatchMap``); when every pool thread runs a device's program
  blocked in that wait, nothing runs the parts, a deadlock (measured: 2 and
  8 host devices on 2 cores, 26 matrices of 128 x 32 per device; one matrix
  per call deadlocks too). Elsewhere, LAPACK's (or the backend's) QR.
  """
  if jax.default_backend() != "cpu" or jax.device_count() == 1:
    Q, R = jnp.linalg.qr(A)
    return Q, jnp.abs(jnp.diagonal(R, axis1=-2, axis2=-1))
  return _gram_schmidt(A)


def _gram_schmidt(A):
  """CGS2 QR of ``(..., d, p)``; a column in the span of the previous ones
  (``|diag R| = 0``) is replaced by a basis vector orthogonalised against
  them, so ``Q`` stays orthonormal as Householder's does."""
  d, p = A.shape[-2:]
  cols = jnp.arange(p)

  def orthogonalise(Q, a, j):
    for _ in range(2):
      r = jnp.where(cols < j, jnp.einsum("...dp,...d->...p", Q, a), 0)
      a = a - jnp.einsum("...dp,...p->...d", Q, r)
    return a

  def column(j, carry):
    Q, diag = carry
    a = orthogonalise(Q, jnp.take(A, j, axis=-1), j)
    n = jnp.sqrt(jnp.sum(jnp.square(a), -1, keepdims=True))

    def complete(a):       # rare: some column lies in the span (n == 0)
      basis = orthogonalise(Q, jnp.broadcast_to(
          (jnp.arange(d) == j % d).astype(A.dtype), a.shape), j)
      nb = jnp.sqrt(jnp.sum(jnp.square(basis), -1, keepdims=True))
      return jnp.where(n > 0, a, basis / jnp.where(nb > 0, nb, 1))

    a = jax.lax.cond(jnp.all(n > 0), lambda a: a, complete, a)
    q = a / jnp.where(n > 0, n, 1)
    Q = jax.lax.dynamic_update_index_in_dim(Q, q, j, axis=-1)
    diag = jax.lax.dynamic_update_index_in_dim(diag, n[..., 0], j, axis=-1)
    return Q, diag

  init = (jnp.zeros_like(A), jnp.zeros(A.shape[:-2] + (p,), A.dtype))
  return jax.lax.fori_loop(0, p, column, init)


# --------------------------------------------------- transitions as data


class Flat:
  """A transition ``step(params, state, x)`` on the raveled state vector.

  Hashable on ``(step, the state's structure, shapes and dtype)``, so a
  jitted program keyed on it compiles once per model, never per params.
  """

  def __init__(self, step, treedef, shapes, dtype):
    self.step, self.treedef, self.shapes = step, treedef, shapes
    self.dtype = jnp.dtype(dtype)
    self.sizes = tuple(int(np.prod(s, dtype=int)) for s in shapes)
    self.size = sum(self.sizes)

  @classmethod
  def of(cls, step, state) -> "Flat":
    leaves, treedef = jax.tree.flatten(state)
    return cls(step, treedef, tuple(jnp.shape(l) for l in leaves),
               jnp.result_type(*leaves))

  def ravel(self, state) -> jax.Array:
    leaves = jax.tree.leaves(state)
    if len(leaves) == 1:
      return jnp.reshape(leaves[0], (-1,))
    return jnp.concatenate([jnp.reshape(l, (-1,)) for l in leaves])

  def unravel(self, v: jax.Array) -> Any:
    if len(self.shapes) == 1:
      return jax.tree.unflatten(self.treedef, [v.reshape(self.shapes[0])])
    parts = jnp.split(v, np.cumsum(self.sizes)[:-1])
    return jax.tree.unflatten(self.treedef, [p.reshape(s) for p, s in
                                             zip(parts, self.shapes)])

  def __call__(self, params, v, x):
    return self.ravel(self.step(params, self.unravel(v), x))

  def _key(self):
    return (self.step, self.treedef, self.shapes, self.dtype)

  def __eq__(self, other):
    return isinstance(other, Flat) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())


def set_knobs(params: Any, knobs: Mapping[str, Any]) -> Any:
  """``params`` with the named scalar leaves replaced (each cast to the
  leaf's dtype). Params are a mapping, a dataclass (a ``flax.struct``
  dataclass too) or a NamedTuple, with the knobs at the top level."""
  if not knobs:
    return params
  old = knob_leaves(params)
  new = {k: jnp.asarray(v, jnp.result_type(old[k])) for k, v in knobs.items()}
  if isinstance(params, Mapping):
    return type(params)({**params, **new}) if not isinstance(
        params, dict) else {**params, **new}
  if dataclasses.is_dataclass(params):
    return dataclasses.replace(params, **new)
  return params._replace(**new)


def knob_leaves(params: Any) -> dict[str, Any]:
  """The top-level scalar float leaves of ``params`` by name: the knobs a
  grid may vary."""
  if isinstance(params, Mapping):
    items = params.items()
  elif dataclasses.is_dataclass(params):
    items = ((f.name, getattr(params, f.name))
             for f in dataclasses.fields(params))
  elif hasattr(params, "_asdict"):
    items = params._asdict().items()
  else:
    return {}
  return {k: v for k, v in items if hasattr(v, "dtype") and jnp.ndim(v) == 0
          and jnp.issubdtype(v.dtype, jnp.floating)}


def linearized_advance(flat: Flat, params: Any, knobs: Mapping[str, Any]
                       ) -> Advance:
  """The generic advance: per point, ``jax.jvp`` (one probe) or
  ``jax.linearize`` of ``flat(params_i, ., x)``, vmapped over the points;
  ``params_i`` is ``params`` with the point's knob values (``knobs``: name
  -> ``(n,)``), so everything else is shared across the batch."""

  def one(kv, h, V, x):
    f = lambda y: flat(set_knobs(params, kv), y, x)
    if V is None:
      return f(h), None
    V = V.astype(h.dtype)
    if V.shape[0] == 1:
      h, jv = jax.jvp(f, (h,), (V[0],))
      return h, jv[None]
    h, lin = jax.linearize(f, h)
    return h, jax.vmap(lin)(V)

  def advance(H, V, x):
    return jax.vmap(one, (0, 0, None if V is None else 0, None))(
        dict(knobs), H, V, x)

  return advance


def pullback_advance(flat: Flat, params: Any, knobs: Mapping[str, Any]
                     ) -> Advance:
  """Backprop's step for the core: ``x = (H_t, x_t)``, the stored states
  entering step t; pulls each point's cotangent rows back through ``J_t``."""

  def one(kv, h, U, x):
    _, pull = jax.vjp(lambda y: flat(set_knobs(params, kv), y, x), h)
    return jax.vmap(lambda u: pull(u)[0])(U)

  def advance(H, U, hx):
    del H
    states, x = hx
    return None, jax.vmap(one, (0, 0, 0, None))(dict(knobs), states, U, x)

  return advance
