"""Tests for exploding.clipping: optax clips plus norms and direction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from exploding import clipping


def _grads():
  return {"a": jnp.array([3.0, 4.0]), "b": jnp.array([[0.0, 12.0]])}


@pytest.mark.parametrize("threshold", [1.0, 13.0, 100.0])
def test_norm_clip_keeps_direction(threshold):
  r = clipping.clip_gradient(_grads(), "norm", threshold)
  np.testing.assert_allclose(r.pre_norm, 13.0, rtol=1e-6)
  np.testing.assert_allclose(r.post_norm, min(13.0, threshold), rtol=1e-6)
  np.testing.assert_allclose(r.cosine, 1.0, rtol=1e-6)
  assert bool(r.finite)


def test_norm_clip_random_tree():
  rng = np.random.default_rng(0)
  g = {"w": rng.normal(size=(5, 7)).astype(np.float32),
       "b": rng.normal(size=(7,)).astype(np.float32)}
  raw = float(np.sqrt(np.sum(g["w"]**2.0) + np.sum(g["b"]**2.0)))
  r = clipping.clip_gradient(g, "norm", 0.5 * raw)
  np.testing.assert_allclose(r.pre_norm, raw, rtol=1e-6)
  np.testing.assert_allclose(r.post_norm, 0.5 * raw, rtol=1e-6)
  np.testing.assert_allclose(r.grads["w"], 0.5 * g["w"], rtol=1e-5)


def test_value_clip_bounds_and_rotates():
  r = clipping.clip_gradient(_grads(), "value", 1.0)
  for leaf in jax.tree.leaves(r.grads):
    assert jnp.all(jnp.abs(leaf) <= 1.0)
  # clipped (1, 1, 0, 1) against raw (3, 4, 0, 12): 19 / (sqrt(3) * 13)
  np.testing.assert_allclose(r.cosine, 19.0 / (np.sqrt(3.0) * 13.0),
                             rtol=1e-6)
  assert float(r.cosine) < 0.9
  np.testing.assert_allclose(r.pre_norm, 13.0, rtol=1e-6)
  np.testing.assert_allclose(r.post_norm, np.sqrt(3.0), rtol=1e-6)


def test_block_rms_and_adaptive_match_optax():
  g = _grads()
  params = jax.tree.map(lambda x: 2.0 * jnp.ones_like(x), g)
  for method, transform in [
      ("block_rms", optax.clip_by_block_rms(1.0)),
      ("adaptive", optax.adaptive_grad_clip(1.0))]:
    r = clipping.clip_gradient(g, method, 1.0, params=params)
    want = jax.jit(lambda g, p, t=transform: t.update(g, None, p)[0])(
        g, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 r.grads, want)
  # block_rms: leaf a (rms 3.54) -> rms 1; leaf b (rms 8.49) -> rms 1.
  r = clipping.clip_gradient(g, "block_rms", 1.0)
  np.testing.assert_allclose(r.post_norm, 2.0, rtol=1e-6)


def test_none_is_identity():
  r = clipping.clip_gradient(_grads(), "none")
  np.testing.assert_array_equal(r.grads["b"], _grads()["b"])
  np.testing.assert_allclose(r.post_norm, r.pre_norm)


def test_float32_overflow_not_zeroed():
  # optax's sum of squares overflows here and would return zeros.
  g = {"a": jnp.array([1e20, -1e20], jnp.float32)}
  raw_optax, _ = optax.clip_by_global_norm(1.0).update(g, None)
  assert float(jnp.abs(raw_optax["a"]).max()) == 0.0
  r = clipping.clip_gradient(g, "norm", 1.0)
  np.testing.assert_allclose(r.pre_norm, np.sqrt(2.0) * 1e20, rtol=1e-6)
  np.testing.assert_allclose(r.post_norm, 1.0, rtol=1e-6)
  np.testing.assert_allclose(r.grads["a"], [2**-0.5, -(2**-0.5)], rtol=1e-6)


@pytest.mark.parametrize("bad, pre_is_nan", [(jnp.inf, False),
                                             (jnp.nan, True)])
def test_nonfinite_flagged(bad, pre_is_nan):
  g = {"a": jnp.array([1.0, bad]), "b": jnp.ones(3)}
  r = clipping.clip_gradient(g, "norm", 1.0)
  assert not bool(r.finite)
  assert bool(jnp.isnan(r.pre_norm)) == pre_is_nan
  assert not bool(jnp.isfinite(r.pre_norm))
  assert bool(jnp.isnan(r.cosine))


def test_jit_with_traced_threshold():
  f = jax.jit(clipping.clip_gradient, static_argnums=1)
  r = f(_grads(), "norm", jnp.float32(2.0))
  np.testing.assert_allclose(r.post_norm, 2.0, rtol=1e-6)
  r = f(_grads(), "value", jnp.float32(2.0))
  assert float(jnp.max(r.grads["b"])) == 2.0


def test_float64(x64):
  g = {"a": jnp.array([3.0, 4.0], jnp.float64)}
  r = clipping.clip_gradient(g, "norm", 1.0)
  assert r.grads["a"].dtype == jnp.float64
  np.testing.assert_allclose(r.grads["a"], [0.6, 0.8], rtol=1e-14)


def test_clipper_in_chain_and_skip():
  g = _grads()
  opt = optax.chain(clipping.clipper("norm", 1.0), optax.sgd(0.1))
  updates, _ = jax.jit(opt.update)(g, opt.init(g))
  np.testing.assert_allclose(optax.tree.norm(updates), 0.1, rtol=1e-6)
  skip = clipping.clipper("norm", 1.0, skip_nonfinite=True)
  bad = {"a": jnp.array([jnp.nan, 1.0]), "b": jnp.ones((1, 2))}
  updates, state = jax.jit(skip.update)(bad, skip.init(bad))
  assert float(optax.tree.norm(updates)) == 0.0
  assert int(state.total_notfinite) == 1


def test_bad_arguments():
  with pytest.raises(ValueError, match="method"):
    clipping.clip_gradient(_grads(), "clip", 1.0)
  for bad in [0.0, -1.0, float("nan"), float("inf")]:
    with pytest.raises(ValueError, match="threshold"):
      clipping.clip_gradient(_grads(), "norm", bad)
  with pytest.raises(ValueError, match="threshold"):
    clipping.clipper("value")
  with pytest.raises(ValueError, match="params"):
    clipping.clip_gradient(_grads(), "adaptive", 1.0)
  with pytest.raises(ValueError, match="grads"):
    clipping.clip_gradient({}, "norm", 1.0)


# Issue 13: float16 gradients. The power-of-two rescale 2**16 is inf in
# float16, so the clip returned [nan, nan] with finite=True.
@pytest.mark.parametrize("method, want", [
    ("norm", [1.0, 3.0 / 40000.0]),
    ("value", [1.0, 1.0]),
    # RMS of (40000, 3) is 28284.3: clipped to RMS 1.
    ("block_rms", [40000.0 / 28284.3, 3.0 / 28284.3]),
])
def test_float16_clips_correctly(method, want):
  g = {"w": jnp.array([40000.0, 3.0], jnp.float16)}
  r = clipping.clip_gradient(g, method, 1.0)
  assert r.grads["w"].dtype == jnp.float16
  np.testing.assert_allclose(np.asarray(r.grads["w"], np.float32), want,
                             rtol=2e-3)
  assert bool(r.finite)
  assert r.pre_norm.dtype == jnp.float32
  np.testing.assert_allclose(r.pre_norm, 40000.0, rtol=1e-6)


def test_float16_norm_above_float16_max_is_finite():
  g = {"w": jnp.full((4,), 60000.0, jnp.float16)}
  r = clipping.clip_gradient(g, "norm", 1.0)
  np.testing.assert_allclose(r.pre_norm, 120000.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(r.grads["w"], np.float32), 0.5,
                             rtol=1e-3)


def test_float16_params_stay_finite_in_an_optax_chain():
  params = {"w": jnp.array([1.0, 2.0], jnp.float16)}
  grads = {"w": jnp.array([40000.0, 3.0], jnp.float16)}
  # first entry clipped to 1 (norm, value) or 40000 / rms = sqrt(2)
  for method, g0 in [("norm", 1.0), ("value", 1.0), ("block_rms", 2**0.5)]:
    opt = optax.chain(clipping.clipper(method, 1.0), optax.sgd(0.5))
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    assert new["w"].dtype == jnp.float16
    assert bool(jnp.all(jnp.isfinite(new["w"]))), (method, new)
    np.testing.assert_allclose(np.asarray(new["w"][0], np.float32),
                               1.0 - 0.5 * g0, rtol=2e-3)


def test_bfloat16_and_mixed_dtypes_clip_per_leaf():
  g = {"a": jnp.array([3.0, 4.0], jnp.float16),
       "b": jnp.array([0.0, 12.0], jnp.float32),
       "c": jnp.array([[0.0]], jnp.bfloat16)}
  r = clipping.clip_gradient(g, "norm", 1.0)
  assert {k: v.dtype for k, v in r.grads.items()} == {
      "a": jnp.float16, "b": jnp.float32, "c": jnp.bfloat16}
  np.testing.assert_allclose(r.pre_norm, 13.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(r.grads["a"], np.float32),
                             [3 / 13, 4 / 13], rtol=1e-3)
  np.testing.assert_allclose(r.grads["b"], [0.0, 12 / 13], rtol=1e-6)
  opt = clipping.clipper("block_rms", 1.0)
  out, _ = jax.jit(opt.update)(g, opt.init(g))
  assert out["a"].dtype == jnp.float16 and out["c"].dtype == jnp.bfloat16


def test_empty_leaves_pass_through():
  g = {"a": jnp.zeros((0, 3)), "b": jnp.array([3.0, 4.0])}
  for method in ("norm", "value", "block_rms"):
    r = clipping.clip_gradient(g, method, 1.0)
    assert r.grads["a"].shape == (0, 3)
    np.testing.assert_allclose(r.pre_norm, 5.0, rtol=1e-6)
  np.testing.assert_allclose(clipping.clip_gradient(g, "norm", 1.0).grads["b"],
                             [0.6, 0.8], rtol=1e-6)


def test_float32_extremes_clip_correctly():
  # max |g| = 3e38: the old rescale 2**128 was inf in float32 (NaN result).
  r = clipping.clip_gradient({"a": jnp.array([3e38, -3e38], jnp.float32)},
                             "norm", 1.0)
  np.testing.assert_allclose(r.grads["a"], [2**-0.5, -(2**-0.5)], rtol=1e-6)
  # A threshold far below max |g|: value clips need no rescale (was zeros),
  # and the norm clip does not underflow c / s.
  g = {"a": jnp.array([1e30, -1e30], jnp.float32)}
  r = clipping.clip_gradient(g, "value", 1e-20)
  np.testing.assert_allclose(r.grads["a"], [1e-20, -1e-20], rtol=1e-6)
  r = clipping.clip_gradient(g, "norm", 1e-20)
  np.testing.assert_allclose(r.grads["a"], [2**-0.5 * 1e-20,
                                            -(2**-0.5) * 1e-20], rtol=1e-6)
  # Within the threshold: returned bit for bit, tiny leaves included.
  g = {"a": jnp.array([1e20], jnp.float32), "b": jnp.array([1e-20])}
  r = clipping.clip_gradient(g, "norm", 1e21)
  assert float(r.grads["b"][0]) == float(g["b"][0])


@pytest.mark.parametrize("grads, threshold, error, match", [
    ({"w": jnp.array([3, 4])}, 1.0, TypeError, r"grads.*\['w'\].*int32"),
    ({"w": jnp.array([True])}, 1.0, TypeError, r"grads.*bool"),
    ({"w": jnp.array([1 + 1j])}, 1.0, TypeError, r"grads.*complex"),
    ({"w": jnp.zeros((0,))}, 1.0, ValueError, r"grads.*at least one entry"),
    ({"w": jnp.ones(2)}, 1e39, ValueError,
     r"threshold.*float32.*3\.403e\+38"),
    ({"w": jnp.ones(2)}, 1e-50, ValueError, r"threshold.*float32.*1\.175e-38"),
    ({"w": jnp.ones(2)}, jnp.ones(2), ValueError, r"threshold.*scalar"),
])
def test_bad_input_raises_before_computing(grads, threshold, error, match):
  for method in ("value", "norm", "block_rms"):
    with pytest.raises(error, match=match):
      clipping.clip_gradient(grads, method, threshold)


def test_clipper_checks_dtype_and_threshold_when_traced():
  opt = clipping.clipper("norm", 1e39)
  g = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="threshold.*float32"):
    jax.jit(opt.update)(g, opt.init(g))
  opt = clipping.clipper("norm", 1.0)
  with pytest.raises(TypeError, match="updates.*int32"):
    opt.update({"w": jnp.array([3, 4])}, opt.init(g))


def test_adaptive_params_must_match_grads():
  g = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="params"):
    clipping.clip_gradient(g, "adaptive", 1.0, params={"v": jnp.ones(2)})
  with pytest.raises(ValueError, match="params"):
    clipping.clip_gradient(g, "adaptive", 1.0, params={"w": jnp.ones(3)})


def test_float64_threshold_range(x64):
  g = {"a": jnp.array([3.0, 4.0], jnp.float64)}
  r = clipping.clip_gradient(g, "norm", 1e39)   # fine in float64
  np.testing.assert_array_equal(r.grads["a"], g["a"])
