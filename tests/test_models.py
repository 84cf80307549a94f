"""Models against closed forms, flax's own cells and finite differences."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exploding as ex


def test_initializer_statistics(getkey):
  w = ex.initializers.gaussian(getkey(), (400, 400), weight_scale=1.5)
  np.testing.assert_allclose(np.var(np.asarray(w)) * 400, 1.5**2, rtol=0.02)
  q = ex.initializers.orthogonal(getkey(), (50, 50), weight_scale=0.7)
  np.testing.assert_allclose(np.linalg.svd(np.asarray(q))[1], 0.7, rtol=1e-5)
  i = ex.initializers.identity(getkey(), (5, 5), weight_scale=3.0)
  np.testing.assert_array_equal(i, 3.0 * np.eye(5))


def test_rnn_step_equation(getkey):
  p = ex.rnn.init(getkey(), 6, weight_scale=1.7, bias_scale=0.3,
                  activation="sigmoid", input_size=2)
  h, x = jax.random.normal(getkey(), (6,)), jax.random.normal(getkey(), (2,))
  want = jax.nn.sigmoid(1.7 * (p.W0 @ h) + p.U @ x + 0.3 * p.b0)
  np.testing.assert_allclose(ex.rnn.step(p, h, x), want, rtol=1e-6)
  np.testing.assert_array_equal(p.b, 0.3 * p.b0)
  hs = ex.rnn.apply(p, h, jnp.stack([x, x, x]))
  np.testing.assert_allclose(hs[0], want, rtol=1e-6)
  assert hs.shape == (3, 6)


def test_weight_and_bias_scales_are_vmappable_leaves(getkey):
  p = ex.rnn.init(getkey(), 5)
  h = jnp.ones(5)
  out = jax.vmap(lambda g, sb: ex.rnn.step(
      p.replace(weight_scale=g, bias_scale=sb), h))(jnp.array([0.5, 2.0]),
                                                    jnp.array([0.0, 0.7]))
  np.testing.assert_allclose(out[0], jnp.tanh(0.5 * p.W0 @ h), rtol=1e-6)
  np.testing.assert_allclose(out[1], jnp.tanh(2.0 * p.W0 @ h + 0.7 * p.b0),
                             rtol=1e-6)
  assert all(isinstance(l, jax.Array) for l in jax.tree.leaves(p))
  assert p.weight_scale.shape == p.bias_scale.shape == ()


def _flax_lstm_params(p):
  """Maps our (4H, H) gate blocks i, f, g, o onto flax's Dense kernels; the
  forget bias joins the forget gate's Dense bias."""
  W = p.weight_scale * p.W0
  b = p.bias_scale * p.b0
  b = b.at[p.hidden:2 * p.hidden].add(p.forget_bias)
  blocks = lambda a: jnp.split(a, 4)
  params = {}
  for name, Wg, Ug, bg in zip("ifgo", blocks(W), blocks(p.U), blocks(b)):
    params["h" + name] = {"kernel": Wg.T, "bias": bg}
    params["i" + name] = {"kernel": Ug.T}
  return {"params": params}


@pytest.mark.parametrize("cell_cls", [nn.LSTMCell, nn.OptimizedLSTMCell])
def test_lstm_matches_flax(cell_cls, getkey):
  hidden, inp = 5, 3
  p = ex.lstm.init(getkey(), hidden, weight_scale=1.3, forget_bias=2.0,
                   input_size=inp, bias_scale=0.5)
  h, c = jax.random.normal(getkey(), (2, hidden))
  x = jax.random.normal(getkey(), (inp,))
  (c_f, h_f), _ = cell_cls(hidden).apply(_flax_lstm_params(p), (c, h), x)
  h_e, c_e = ex.lstm.step(p, (h, c), x)
  np.testing.assert_allclose(h_e, h_f, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_e, c_f, rtol=1e-5, atol=1e-6)


def _cell_path(p, c, x):
  """The LSTM's memory cell alone, with ``h = 0``."""
  return ex.lstm.step(p, (jnp.zeros_like(c), c), x)[1]


@pytest.mark.parametrize("forget_bias", [3.0, -1.0])
def test_lstm_forget_gate_alone_decays_as_sigmoid_bias(forget_bias, getkey):
  # With tiny recurrent weights and zero input, dc_T/dc_0 = sigmoid(b_f)^T
  # (the forget bias is a knob: new values reuse the program).
  p = ex.lstm.init(getkey(), 4, weight_scale=1e-6, forget_bias=forget_bias)
  g = ex.jvp_growth(_cell_path, p, jnp.zeros(4), length=50, key=getkey())
  np.testing.assert_allclose(
      g.log_growth, np.arange(1, 51) * np.log(jax.nn.sigmoid(forget_bias)),
      rtol=1e-4)


def test_batchnorm_matches_flax(getkey):
  z = 3.0 + 2.0 * jax.random.normal(getkey(), (16, 7))
  bn = nn.BatchNorm(use_running_average=False, use_bias=False,
                    use_scale=False, epsilon=1e-5)
  variables = bn.init(getkey(), z)
  want, _ = bn.apply(variables, z, mutable=["batch_stats"])
  np.testing.assert_allclose(ex.mlp.batchnorm(z), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batchnorm,residual", [(False, False), (True, False),
                                                (False, True), (True, True)])
def test_mlp_layer_equation(batchnorm, residual, getkey):
  p = ex.mlp.init(getkey(), 6, 3, weight_scale=1.4, bias_scale=0.2,
                  activation="relu", batchnorm=batchnorm, residual=residual)
  x = jax.random.normal(getkey(), (8, 6))
  h = x
  for l in range(3):
    z = 1.4 * h @ p.W0[l].T + 0.2 * p.b0[l]
    if batchnorm:
      z = (z - z.mean(0)) / jnp.sqrt(z.var(0) + 1e-5)
    h = h + jax.nn.relu(z) if residual else jax.nn.relu(z)
  np.testing.assert_allclose(ex.mlp.apply(p, x), h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["rnn", "lstm", "mlp"])
def test_gradients_match_finite_differences(model, getkey, x64):
  key = getkey()
  if model == "rnn":
    p = ex.rnn.init(key, 5, weight_scale=1.2, bias_scale=0.1, dtype="float64")
    loss = lambda h: jnp.sum(ex.rnn.apply(p, h, length=6)[-1] ** 2)
    h0 = jnp.linspace(-1, 1, 5)
  elif model == "lstm":
    p = ex.lstm.init(key, 5, weight_scale=1.2, dtype="float64")
    loss = lambda h: jnp.sum(ex.lstm.apply(p, (h, h), length=6)[0][-1] ** 2)
    h0 = jnp.linspace(-1, 1, 5)
  else:
    p = ex.mlp.init(key, 5, 4, weight_scale=1.2, batchnorm=True,
                    residual=True, dtype="float64")
    loss = lambda h: jnp.sum(ex.mlp.apply(p, h.reshape(2, 5)) ** 3)
    h0 = jnp.linspace(-1, 1, 10)
  g = jax.grad(loss)(h0)
  eps = 1e-6
  fd = np.array([(loss(h0.at[i].add(eps)) - loss(h0.at[i].add(-eps)))
                 / (2 * eps) for i in range(h0.size)])
  np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


_CHAINS = {act: (lambda p, h, x, phi=ex.activation(act).fn: phi(p * h))
           for act in ("relu", "tanh", "sigmoid")}


@pytest.mark.parametrize("act", sorted(_CHAINS))
def test_scalar_chain_slopes(act):
  # relu(8 relu(8 relu(8 x))) has slope 512 at x > 0; for tanh and sigmoid
  # the chain rule gives the product of w * phi'(a_t) along the chain.
  w, x = 8.0, 0.05
  phi = ex.activation(act).fn
  g = ex.jvp_growth(_CHAINS[act], w, jnp.array([x]), length=3,
                    key=jax.random.key(0))
  a, want = x, 1.0
  for _ in range(3):
    want *= w * jax.grad(phi)(w * a)
    a = phi(w * a)
  np.testing.assert_allclose(np.exp(g.log_growth[-1]), abs(want), rtol=1e-5)
  if act == "relu":
    np.testing.assert_allclose(np.exp(g.log_growth), [8, 64, 512], rtol=1e-5)


BAD_INIT = [
    (ex.rnn.init, dict(hidden=0), "hidden"),
    (ex.rnn.init, dict(hidden=4, weight_scale=-1.0), "weight_scale"),
    (ex.rnn.init, dict(hidden=4, weight_scale=0.0), "weight_scale"),
    (ex.rnn.init, dict(hidden=4, bias_scale=-0.1), "bias_scale"),
    (ex.rnn.init, dict(hidden=4, activation="swish"), "activation"),
    (ex.rnn.init, dict(hidden=4, init="xavier"), "init"),
    (ex.rnn.init, dict(hidden=4, weight_scale=float("nan")), "weight_scale"),
    (ex.lstm.init, dict(hidden=0), "hidden"),
    (ex.lstm.init, dict(hidden=3, weight_scale=-2.0), "weight_scale"),
    (ex.lstm.init, dict(hidden=3, forget_bias=float("nan")), "forget_bias"),
    (ex.lstm.init, dict(hidden=3, bias_scale=-0.5), "bias_scale"),
    (ex.mlp.init, dict(width=0, depth=2), "width"),
    (ex.mlp.init, dict(width=3, depth=0), "depth"),
    (ex.mlp.init, dict(width=3, depth=2, weight_scale=0.0), "weight_scale"),
    (ex.mlp.init, dict(width=3, depth=2, activation="gelu"), "activation"),
    (ex.mlp.init, dict(width=3, depth=2, bias_scale=-1.0), "bias_scale"),
    (ex.mlp.init, dict(width=3, depth=2, batchnorm="no"), "batchnorm"),
]


@pytest.mark.parametrize("fn,kwargs,name", BAD_INIT)
def test_init_rejects_bad_input(fn, kwargs, name):
  with pytest.raises((ValueError, TypeError), match=name):
    fn(jax.random.key(0), **kwargs)


def test_apply_rejects_bad_input(getkey):
  p = ex.rnn.init(getkey(), 4, input_size=2)
  with pytest.raises(ValueError, match="hidden"):
    ex.rnn.apply(p, jnp.ones(3), length=2)
  with pytest.raises(ValueError, match="input_size"):
    ex.rnn.apply(p, jnp.ones(4), jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="length"):
    ex.rnn.apply(p, jnp.ones(4), length=0)
  with pytest.raises(ValueError, match="params"):
    ex.rnn.apply(p.replace(W0=p.W0.at[0, 0].set(jnp.nan)), jnp.ones(4),
                 length=2)
  with pytest.raises(ValueError, match="h0"):
    ex.rnn.apply(p, jnp.full(4, jnp.nan), length=2)
  m = ex.mlp.init(getkey(), 4, 2)
  with pytest.raises(ValueError, match="x"):
    ex.mlp.apply(m, jnp.ones((2, 5)))
  with pytest.raises(ValueError, match="activation"):
    ex.activation("softplus")


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
def test_rnn_fused_advance_is_the_jvp_of_step(act, getkey):
  # The Model's one-GEMM forward step for a batch of points, each with its
  # own knobs, equals jax.jvp of ``step`` at that point's params.
  model = ex.rnn.model(7, activation=act, input_size=3)
  p = ex.rnn.init(getkey(), 7, weight_scale=1.3, bias_scale=0.4,
                  activation=act, input_size=3)
  knobs = {"weight_scale": jnp.array([1.3, 0.6]),
           "bias_scale": jnp.array([0.4, 0.0])}
  H = jax.random.normal(getkey(), (2, 7))
  V = jax.random.normal(getkey(), (2, 3, 7))
  x = jax.random.normal(getkey(), (3,))
  H1, JV = model.advance(p, knobs, H, V, x)
  for i in range(2):
    q = p.replace(weight_scale=knobs["weight_scale"][i],
                  bias_scale=knobs["bias_scale"][i])
    jvp = lambda v: jax.jvp(lambda y: ex.rnn.step(q, y, x), (H[i],), (v,))
    np.testing.assert_allclose(H1[i], ex.rnn.step(q, H[i], x), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(JV[i], jax.vmap(lambda v: jvp(v)[1])(V[i]),
                               rtol=1e-5, atol=1e-6)


def test_models_declare_homogeneity():
  # Declared, never guessed: ReLU and linear nets without bias (and without
  # batch norm) are homogeneous, decided from params per point.
  key = jax.random.key(0)
  for act, want in (("relu", True), ("linear", True), ("tanh", False)):
    m = ex.rnn.model(4, activation=act)
    p = m.init(key)
    for sb, hom in ((0.0, want), (0.5, False)):
      q = p.replace(bias_scale=jnp.float32(sb))
      got = m.homogeneous(q) if callable(m.homogeneous) else m.homogeneous
      assert bool(got) is hom, (act, sb)
  for batchnorm, want in ((False, True), (True, False)):
    m = ex.mlp.model(4, 3, batch=4, activation="relu", batchnorm=batchnorm)
    got = m.homogeneous(m.init(key)) if callable(m.homogeneous) else (
        m.homogeneous)
    assert bool(got) is want
  assert ex.lstm.model(4).homogeneous is False


def test_model_constructors_cache_and_validate():
  # Equality is identity and a sweep compiles once per Model: the same
  # arguments give the same object.
  assert ex.rnn.model(5, activation="relu") is ex.rnn.model(5,
                                                            activation="relu")
  assert ex.rnn.model(5) is not ex.rnn.model(6)
  assert ex.lstm.model(5) is ex.lstm.model(5)
  assert ex.mlp.model(5, 3) is ex.mlp.model(5, 3)
  m = ex.rnn.model(5, bias_scale=0.5, weight_scale=2.0)
  p = m.init(jax.random.key(0))
  assert float(p.weight_scale) == 2.0 and float(p.bias_scale) == 0.5
  assert jax.tree.structure(m.state0(jax.random.key(1))) == jax.tree.structure(
      jnp.ones(5))
  with pytest.raises(TypeError, match="init"):
    ex.Model(init=3, step=ex.rnn.step, state0=jnp.ones)
  with pytest.raises(TypeError, match="homogeneous"):
    ex.Model(init=jnp.ones, step=ex.rnn.step, state0=jnp.ones,
             homogeneous="yes")
  with pytest.raises(ValueError, match="batch"):
    ex.mlp.model(4, 3, batch=1, batchnorm=True)
