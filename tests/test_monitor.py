"""ex.monitor, ex.monitor_history, ex.skip_if_log_norm_jumps, ex.plot_monitor:
records against norms and counts computed directly in float64, skips against
runs that never saw the skipped step."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import exploding as ex


class _MLP(nn.Module):
  width: int = 8
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(self.width, dtype=self.dtype,
                          param_dtype=self.dtype)(x))
    return nn.Dense(2, dtype=self.dtype, param_dtype=self.dtype)(x)


def _problem(key=0, dtype=jnp.float32):
  model = _MLP(dtype=dtype)
  kx, ky, kp = jax.random.split(jax.random.key(key), 3)
  x = jax.random.normal(kx, (16, 4), dtype)
  y = jax.random.normal(ky, (16, 2), dtype)
  params = model.init(kp, x)["params"]
  loss = lambda p, s: s * jnp.mean((model.apply({"params": p}, x) - y) ** 2)
  return params, loss


def _train(tx, steps, *, key=0, factors=None):
  """Trains the MLP under ``jit``; ``factors[t]`` multiplies the gradient of
  step ``t`` (a spike, or NaN). Returns per-step params, grads and states."""
  params, loss = _problem(key)
  factors = np.ones(steps) if factors is None else np.asarray(factors)

  @jax.jit
  def step(p, o, f):
    g = jax.grad(loss)(p, 1.0)
    g = jax.tree.map(lambda a: a * f, g)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, g

  opt = tx.init(params)
  ps, gs, os_ = [params], [], [opt]
  for t in range(steps):
    params, opt, g = step(params, opt, jnp.float32(factors[t]))
    ps.append(params), gs.append(g), os_.append(opt)
  assert step._cache_size() == 1      # one compile for the whole run
  return ps, gs, os_


def _log_norm64(tree):
  return float(np.log(np.sqrt(sum(
      np.sum(np.asarray(a, np.float64) ** 2) for a in jax.tree.leaves(tree)))))


def test_records_equal_norms_computed_directly():
  steps, history = 7, 4
  tx = optax.chain(ex.monitor(history=history), optax.adam(1e-2))
  ps, gs, states = _train(tx, steps)
  h = ex.monitor_history(states[-1])
  names = [jax.tree_util.keystr(k, simple=True, separator="/")
           for k, _ in jax.tree_util.tree_flatten_with_path(ps[0])[0]]
  assert h.leaf_names == tuple(names)
  assert "Dense_0/kernel" in names
  np.testing.assert_array_equal(h.step, np.arange(steps - history, steps))
  for row, t in enumerate(h.step):
    leaves = jax.tree.leaves(gs[t])
    np.testing.assert_allclose(h.log_norm[row], _log_norm64(gs[t]),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h.leaf_log_norm[row],
                               [_log_norm64(a) for a in leaves],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(h.zero_fraction[row],
                                  [np.mean(np.asarray(a) == 0) for a in leaves])
    np.testing.assert_array_equal(h.inf_fraction[row], 0)
    np.testing.assert_array_equal(h.nan_fraction[row], 0)
  assert h.clip_ratio is None
  # updates pass through unchanged: the same run as adam alone
  ps_adam, _, _ = _train(optax.adam(1e-2), steps)
  for a, b in zip(jax.tree.leaves(ps[-1]), jax.tree.leaves(ps_adam[-1])):
    np.testing.assert_array_equal(a, b)


def test_clip_ratio_is_what_the_clipper_does():
  params, loss = _problem(1)
  g = jax.grad(loss)(params, 1.0)
  norm = math.exp(_log_norm64(g))
  for c in (0.1 * norm, 0.9 * norm, 10 * norm):
    tx = optax.chain(ex.monitor(clip_norm=c), optax.clip_by_global_norm(c))
    _, state = jax.jit(tx.update)(g, tx.init(params), params)
    clipped, _ = optax.clip_by_global_norm(c).update(g, None)
    expect = math.exp(_log_norm64(clipped)) / norm
    h = ex.monitor_history(state)
    np.testing.assert_allclose(h.clip_ratio, [expect], rtol=1e-5)
    assert (h.clip_ratio[0] < 1) == (c < norm)


def test_float16_underflow_shows_as_zero_fraction():
  # inputs from 1e-6 to 1: the float16 kernel gradient x^T delta underflows
  # to exact zeros in the tiny-input rows, which float32 resolves.
  zero = {}
  for dtype in (jnp.float16, jnp.float32):
    model = nn.Dense(4, dtype=dtype, param_dtype=dtype)
    x = (jax.random.normal(jax.random.key(0), (8, 16))
         * jnp.logspace(-6, 0, 16)).astype(dtype)
    params = model.init(jax.random.key(1), x)["params"]
    g = jax.grad(lambda p: jnp.mean(
        (model.apply({"params": p}, x) - 1) ** 2))(params)
    tx = optax.chain(ex.monitor(), optax.adam(1e-3))
    _, state = jax.jit(tx.update)(g, tx.init(params), params)
    h = ex.monitor_history(state)
    k = h.leaf_names.index("kernel")
    direct = np.mean(np.asarray(g["kernel"]) == 0)
    assert h.zero_fraction[0, k] == direct
    zero[dtype] = direct
    assert h.log_norm.dtype == np.float32          # float16 records: float32
  assert zero[jnp.float16] > 0 and zero[jnp.float32] == 0


def test_inf_nan_zero_and_huge_leaves(x64):
  params = {"a": jnp.zeros(4, jnp.float32), "b": jnp.zeros(5, jnp.float32),
            "c": jnp.zeros((2, 3), jnp.float32), "d": jnp.zeros(8, jnp.float32)}
  g = {"a": jnp.array([1.0, 0.0, jnp.inf, -jnp.inf], jnp.float32),
       "b": jnp.array([jnp.nan, 0, 0, 2, 3], jnp.float32),
       "c": jnp.zeros((2, 3), jnp.float32),
       "d": jnp.full(8, 3e37, jnp.float32)}   # sum of squares overflows
  tx = ex.monitor(history=3)
  out, state = jax.jit(tx.update)(g, tx.init(params))
  assert out is g or all(np.array_equal(out[k], g[k], equal_nan=True)
                         for k in g)
  h = ex.monitor_history(state)
  assert h.leaf_names == ("a", "b", "c", "d")
  np.testing.assert_allclose(h.zero_fraction[0], [1 / 4, 2 / 5, 1, 0],
                             rtol=1e-7)
  np.testing.assert_allclose(h.inf_fraction[0], [2 / 4, 0, 0, 0], rtol=1e-7)
  np.testing.assert_allclose(h.nan_fraction[0], [0, 1 / 5, 0, 0], rtol=1e-7)
  la, lb, lc, ld = h.leaf_log_norm[0]
  assert np.isnan(la) and np.isnan(lb) and lc == -np.inf
  np.testing.assert_allclose(
      ld, np.log(np.float64(np.float32(3e37))) + 0.5 * np.log(8), rtol=1e-7)
  assert np.isnan(h.log_norm[0])
  # finite leaves only: the global norm is the leaves' combined, no overflow
  tx = ex.monitor()
  _, state = jax.jit(tx.update)({"c": g["c"], "d": g["d"]},
                                tx.init({"c": g["c"], "d": g["d"]}))
  np.testing.assert_allclose(ex.monitor_history(state).log_norm[0], ld,
                             rtol=1e-7)


def test_extreme_finite_norms_take_the_scaled_path():
  # norms from 1e-29 to 1e38 in float32: the plain sum of squares would
  # underflow or overflow; the records are the float64 values
  g = {"tiny": jnp.full(6, 3e-30, jnp.float32),
       "huge": jnp.full(3, 2e38, jnp.float32),
       "zero": jnp.zeros(2, jnp.float32),
       "one": jnp.ones(4, jnp.float32)}
  tx = ex.monitor()
  _, state = jax.jit(tx.update)(g, tx.init(g))
  h = ex.monitor_history(state)
  expect = {k: _log_norm64(v) if np.any(np.asarray(v)) else -np.inf
            for k, v in g.items()}
  np.testing.assert_allclose(h.leaf_log_norm[0],
                             [expect[k] for k in h.leaf_names], rtol=1e-6)
  np.testing.assert_allclose(h.log_norm[0], _log_norm64(g), rtol=1e-6)
  np.testing.assert_array_equal(h.zero_fraction[0],
                                [k == "zero" for k in h.leaf_names])
  assert not h.inf_fraction.any() and not h.nan_fraction.any()


def test_float64_params_record_in_float64(x64):
  params, loss = _problem(2, jnp.float64)
  g = jax.jit(jax.grad(loss))(params, 1.0)
  tx = ex.monitor()
  _, state = jax.jit(tx.update)(g, tx.init(params))
  h = ex.monitor_history(state)
  assert h.log_norm.dtype == np.float64
  np.testing.assert_allclose(h.log_norm[0], _log_norm64(g), rtol=1e-13)


def test_injected_spike_is_skipped():
  steps, spike = 12, 8
  factors = np.ones(steps)
  factors[spike] = 1e4
  skip = ex.skip_if_log_norm_jumps(optax.adam(1e-2), k=math.log(10),
                                   window=8, warmup=4)
  tx = optax.chain(ex.monitor(history=steps), skip)
  ps, gs, states = _train(tx, steps, factors=factors)
  for t in range(steps):
    moved = any(not np.array_equal(a, b) for a, b in
                zip(jax.tree.leaves(ps[t]), jax.tree.leaves(ps[t + 1])))
    assert moved == (t != spike), t
    assert bool(states[t + 1][1].last_skipped) == (t == spike)
  final = states[-1][1]
  assert int(final.total_skips) == 1
  assert int(final.inner_state[0].count) == steps - 1
  # the monitor sat outside the skip: it recorded the spike
  h = ex.monitor_history(states[-1])
  np.testing.assert_allclose(h.log_norm[spike], _log_norm64(gs[spike]),
                             rtol=1e-6)
  # what followed equals adam run on the same gradients minus the spike
  tx_ref = optax.adam(1e-2)
  p, o = ps[0], tx_ref.init(ps[0])
  for t in range(steps):
    if t != spike:
      g = jax.grad(_problem(0)[1])(p, 1.0)
      u, o = tx_ref.update(g, o, p)
      p = optax.apply_updates(p, u)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ps[-1])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("outer", ["apply_if_finite", "skip"])
def test_composes_with_apply_if_finite(outer):
  steps, nan_step, spike = 12, 6, 9
  factors = np.ones(steps)
  factors[nan_step], factors[spike] = np.nan, 1e4
  skip = lambda inner: ex.skip_if_log_norm_jumps(inner, 2.0, window=8,
                                                 warmup=4)
  finite = lambda inner: optax.apply_if_finite(inner, 3)
  opt = (finite(skip(optax.sgd(1e-2))) if outer == "apply_if_finite"
         else skip(finite(optax.sgd(1e-2))))
  ps, _, states = _train(optax.chain(ex.monitor(history=steps), opt), steps,
                         factors=factors)
  for t in range(steps):
    same = all(np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(ps[t]), jax.tree.leaves(ps[t + 1])))
    assert same == (t in (nan_step, spike)), t
  state = states[-1][1]
  if outer == "apply_if_finite":
    assert int(state.total_notfinite) == 1
    assert int(state.inner_state.total_skips) == 1
  else:
    assert int(state.total_skips) == 1
    assert int(state.inner_state.total_notfinite) == 1
  h = ex.monitor_history(states[-1])
  assert np.isnan(h.log_norm[nan_step])
  assert np.all(h.nan_fraction[nan_step] == 1)


def test_persistent_jump_is_accepted_after_max_consecutive_skips():
  steps, shift, max_skips = 16, 6, 3
  factors = np.where(np.arange(steps) >= shift, 1e4, 1.0)
  tx = ex.skip_if_log_norm_jumps(optax.sgd(1e-6), k=2.0, window=8, warmup=4,
                                 max_consecutive_skips=max_skips)
  _, _, states = _train(tx, steps, factors=factors)
  skipped = [bool(s.last_skipped) for s in states[1:]]
  expect = [shift <= t < shift + max_skips for t in range(steps)]
  assert skipped == expect


def test_no_host_callback_unless_asked():
  params, loss = _problem(3)
  g = jax.grad(loss)(params, 1.0)

  def primitives(tx):
    jaxpr = jax.make_jaxpr(tx.update)(g, tx.init(params)).jaxpr
    return {e.primitive.name for e in jaxpr.eqns}

  assert not any("callback" in p for p in primitives(ex.monitor(5)))
  logged = []
  assert any("callback" in p for p in primitives(
      ex.monitor(5, callback=logged.append)))
  tx = optax.chain(ex.monitor(2, clip_norm=1.0, callback=logged.append),
                   optax.adam(1e-2))
  _, _, states = _train(tx, 3)
  jax.effects_barrier()
  h = ex.monitor_history(states[-1])
  assert [d["step"] for d in logged] == [0, 1, 2]
  last = logged[-1]
  assert last["log_norm"] == pytest.approx(float(h.log_norm[-1]), rel=1e-7)
  assert last["clip_ratio"] == pytest.approx(float(h.clip_ratio[-1]),
                                             rel=1e-7)
  k = h.leaf_names.index("Dense_1/kernel")
  assert last["log_norm/Dense_1/kernel"] == pytest.approx(
      float(h.leaf_log_norm[-1, k]), rel=1e-7)
  assert {"zero_fraction/Dense_1/kernel", "inf_fraction/Dense_0/bias",
          "nan_fraction/Dense_0/kernel"} <= set(last)


def test_monitor_under_vmap_over_seeds():
  params, loss = _problem(4)
  tx = ex.monitor(history=2)

  def one(scale):
    g = jax.grad(loss)(params, scale)
    return tx.update(g, tx.init(params))[1]

  states = jax.jit(jax.vmap(one))(jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match="batched"):
    ex.monitor_history(states)
  h = [ex.monitor_history(jax.tree.map(lambda a, i=i: a[i], states))
       for i in range(2)]
  np.testing.assert_allclose(h[1].log_norm - h[0].log_norm, [math.log(2)],
                             rtol=1e-5)


def test_bad_input():
  params, _ = _problem(5)
  with pytest.raises(ValueError, match="history"):
    ex.monitor(history=0)
  with pytest.raises(TypeError, match="history"):
    ex.monitor(history=2.5)
  with pytest.raises(ValueError, match="clip_norm"):
    ex.monitor(clip_norm=-1.0)
  with pytest.raises(TypeError, match="callback"):
    ex.monitor(callback="wandb")
  with pytest.raises(TypeError, match="'n'.*int32"):
    ex.monitor().init({"n": jnp.zeros(3, jnp.int32)})
  with pytest.raises(ValueError, match="no array leaves"):
    ex.monitor().init({})
  tx = ex.monitor()
  with pytest.raises(ValueError, match="leaves"):
    tx.update({"a": jnp.ones(2)}, tx.init(params))
  for kwargs, match in [(dict(k=0.0), "k"), (dict(k=1.0, window=0), "window"),
                        (dict(k=1.0, window=4, warmup=5), "warmup"),
                        (dict(k=1.0, max_consecutive_skips=-1),
                         "max_consecutive_skips")]:
    with pytest.raises(ValueError, match=match):
      ex.skip_if_log_norm_jumps(optax.adam(1e-3), **kwargs)
  with pytest.raises(ValueError, match="found 0"):
    ex.monitor_history(optax.adam(1e-3).init(params))
  two = optax.chain(ex.monitor(), ex.monitor())
  with pytest.raises(ValueError, match="found 2"):
    ex.monitor_history(two.init(params))


def _map(method="vjp", scales=(1.0, 2.0), length=2, seeds=3):
  rng = np.random.default_rng(0)
  shape = (len(scales), length, seeds)
  return ex.GradientMap(
      log_growth=rng.normal(size=shape), log_state_norm=rng.normal(size=shape),
      overflow_step=-np.ones((len(scales), seeds), int),
      axes={"weight_scale": np.asarray(scales)},
      steps=np.arange(1, length + 1), config={"method": method})


def test_plot_monitor_draws_the_run_beside_the_map():
  steps = 5
  tx = optax.chain(ex.monitor(history=steps), optax.adam(1e-2))
  _, _, states = _train(tx, steps)
  h = ex.monitor_history(states[-1])
  fig = ex.plot_monitor(h)
  assert len(fig.axes) == 1
  ax = fig.axes[0]
  kernel = h.leaf_names.index("Dense_0/kernel")
  np.testing.assert_array_equal(ax.lines[0].get_ydata(),
                                h.leaf_log_norm[:, kernel])
  # two layers (Dense_0, Dense_1): f = 0 is the output layer, f = 1 the
  # first, which has no prediction (its input's norm is not in a map)
  m = _map()
  fig = ex.plot_monitor(states[-1], m, scale=1.9)      # nearest: g = 2
  first, last, pred = fig.axes[1].lines
  np.testing.assert_allclose(pred.get_ydata(), [0, np.nan])
  rel = h.leaf_log_norm[:, [h.leaf_names.index("Dense_1/kernel"), kernel]]
  np.testing.assert_allclose(first.get_ydata(), rel[0] - rel[0, 0])
  np.testing.assert_allclose(last.get_ydata(), rel[-1] - rel[-1, 0])
  # three "layers": the map's backprop growth plus its forward state norms
  layers = ["Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel"]
  m = _map(length=3)
  fig = ex.plot_monitor(h, m, scale=1.0, layers=layers)
  g, s = m.log_growth[0], m.log_state_norm[0]
  expect = np.median([np.zeros(3), g[0] + s[0] - s[1],
                      np.full(3, np.nan)], axis=-1)
  np.testing.assert_allclose(fig.axes[1].lines[2].get_ydata(), expect)
  with pytest.raises(ValueError, match="vjp"):
    ex.plot_monitor(h, _map("jvp"), scale=1.0)
  with pytest.raises(ValueError, match="give scale"):
    ex.plot_monitor(h, m)
  with pytest.raises(ValueError, match="length 3"):
    ex.plot_monitor(h, m, scale=1.0)
  with pytest.raises(ValueError, match="not leaves"):
    ex.plot_monitor(h, layers=["conv/kernel"])
