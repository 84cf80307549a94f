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
