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
  want = jax.nn.sigmoid(1.7 * (p.W0 @ h) + p.U @ x + p.b)
  np.testing.assert_allclose(ex.rnn.step(p, h, x), want, rtol=1e-6)
  hs = ex.rnn.apply(p, h, jnp.stack([x, x, x]))
  np.testing.assert_allclose(hs[0], want, rtol=1e-6)
  assert hs.shape == (3, 6)


def test_weight_scale_is_a_vmappable_leaf(getkey):
  p = ex.rnn.init(getkey(), 5)
  h = jnp.ones(5)
  out = jax.vmap(lambda g: ex.rnn.step(p.replace(weight_scale=g), h))(
      jnp.array([0.5, 2.0]))
  np.testing.assert_allclose(out[1], jnp.tanh(2.0 * p.W0 @ h), rtol=1e-6)
  assert all(isinstance(l, jax.Array) for l in jax.tree.leaves(p))


def _flax_lstm_params(p, hidden):
  """Maps our (4H, H) gate blocks i, f, g, o onto flax's Dense kernels."""
  W = p.weight_scale * p.W0
  blocks = lambda a: jnp.split(a, 4)
  params = {}
  for name, Wg, Ug, bg in zip("ifgo", blocks(W), blocks(p.U), blocks(p.b)):
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
  (c_f, h_f), _ = cell_cls(hidden).apply(_flax_lstm_params(p, hidden),
                                        (c, h), x)
  h_e, c_e = ex.lstm.step(p, (h, c), x)
  np.testing.assert_allclose(h_e, h_f, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_e, c_f, rtol=1e-5, atol=1e-6)


def test_lstm_forget_gate_alone_decays_as_sigmoid_bias(getkey):
  # With tiny recurrent weights and zero input, dc_T/dc_0 = sigmoid(b_f)^T.
  p = ex.lstm.init(getkey(), 4, weight_scale=1e-6, forget_bias=3.0)
  c0 = jnp.zeros(4)
  f = lambda c, x: ex.lstm.step(p, (jnp.zeros(4), c), x)[1]
  g = ex.jvp_growth(f, c0, length=50, key=getkey())
  np.testing.assert_allclose(g.log_growth[-1], 50 * jnp.log(jax.nn.sigmoid(3.0)),
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
    z = 1.4 * h @ p.W0[l].T + p.b[l]
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
  fd = np.array([(loss(h0.at[i].add(eps)) - loss(h0.at[i].add(-eps))) / (2 * eps)
                 for i in range(h0.size)])
  np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_scalar_chain_slopes(act):
  # relu(8 relu(8 relu(8 x))) has slope 512 at x > 0; for tanh and sigmoid
  # the chain rule gives the product of w * phi'(a_t) along the chain.
  w, x = 8.0, 0.05
  phi = ex.activation(act).fn
  f = lambda h, _: phi(w * h)
  g = ex.jvp_growth(f, jnp.array([x]), length=3, key=jax.random.key(0))
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
    (ex.mlp.init, dict(width=0, depth=2), "width"),
    (ex.mlp.init, dict(width=3, depth=0), "depth"),
    (ex.mlp.init, dict(width=3, depth=2, weight_scale=0.0), "weight_scale"),
    (ex.mlp.init, dict(width=3, depth=2, activation="gelu"), "activation"),
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
def test_rnn_step_and_tangent_is_the_jvp(act, getkey):
  p = ex.rnn.init(getkey(), 7, weight_scale=1.3, bias_scale=0.4,
                  activation=act, input_size=3)
  h, x = jax.random.normal(getkey(), (7,)), jax.random.normal(getkey(), (3,))
  V = jax.random.normal(getkey(), (7, 2))
  h1, JV = ex.rnn.step_and_tangent(p, h, x, V)
  want = jax.vmap(lambda v: jax.jvp(lambda y: ex.rnn.step(p, y, x), (h,),
                                    (v,))[1], 1, 1)(V)
  np.testing.assert_allclose(h1, ex.rnn.step(p, h, x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(JV, want, rtol=1e-5, atol=1e-6)
