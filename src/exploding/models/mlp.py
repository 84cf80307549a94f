"""Multilayer perceptron as a chain of transitions, one per layer.

Layer ``l`` maps a batch ``h`` of shape ``(batch, width)`` to

  z = g * (h @ W0_l^T) + sigma_b * b0_l;  z = BN(z) if batchnorm;  a = phi(z);
  h' = h + a if residual else a,

where ``BN`` normalises each unit over the batch with the batch's (biased)
variance and epsilon 1e-5, no learned affine (its value at initialisation;
equal to ``flax.linen.BatchNorm`` in training mode). ``W0_l`` has entries
``N(0, 1/width)``, so ``g`` is sigma_w. The MLP is a transition
``f(h, layer) -> h`` scanned over the stacked layers, so the Jacobian engine
sees depth as it sees time.

References:
  Poole et al. Exponential expressivity in deep neural networks through
  transient chaos. NeurIPS 2016.
  Ioffe, Szegedy. Batch normalization. ICML 2015.
  He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016.
"""

from __future__ import annotations

from typing import Any

import functools

import flax.struct
import jax
import jax.numpy as jnp

from exploding import _validation, initializers
from exploding.activations import ACTIVATIONS, activation as _activation
from exploding.models.model import Model, bias_free, normal_state

__all__ = ["MLPParams", "init", "step", "layers", "apply", "batchnorm",
           "model", "BATCHNORM_EPSILON"]

BATCHNORM_EPSILON = 1e-5


@flax.struct.dataclass
class MLPParams:
  """Parameters of an MLP; every array is a pytree leaf.

  Attributes:
    W0: ``(depth, width, width)`` layer matrices at unit scale.
    b0: ``(depth, width)`` unit bias draws, ``N(0, 1)``.
    weight_scale: ``()`` gain applied after each matmul.
    bias_scale: ``()`` sigma_b, multiplying ``b0``.
    activation, batchnorm, residual: static settings.
  """

  W0: jax.Array
  b0: jax.Array
  weight_scale: jax.Array
  bias_scale: jax.Array
  activation: str = flax.struct.field(pytree_node=False, default="tanh")
  batchnorm: bool = flax.struct.field(pytree_node=False, default=False)
  residual: bool = flax.struct.field(pytree_node=False, default=False)

  @property
  def width(self) -> int:
    return self.W0.shape[-1]

  @property
  def depth(self) -> int:
    return self.W0.shape[0]


def init(key: jax.Array, width: int, depth: int, *, weight_scale: Any = 1.0,
         bias_scale: Any = 0.0, activation: str = "tanh",
         init: str = "gaussian", batchnorm: bool = False,
         residual: bool = False, dtype: Any = None) -> MLPParams:
  """Draws MLP parameters.

  Args:
    key: PRNG key.
    width: units per layer, >= 1.
    depth: number of layers, >= 1.
    weight_scale: sigma_w, > 0.
    bias_scale: sigma_b >= 0.
    activation: nonlinearity name.
    init: ``gaussian``, ``orthogonal`` or ``identity``.
    batchnorm: normalise each unit over the batch before ``phi``.
    residual: add each layer's input to its output.
    dtype: float dtype; ``None`` is the default float.

  Returns:
    ``MLPParams``.
  """
  width = _validation.check_int("width", width, 1)
  depth = _validation.check_int("depth", depth, 1)
  _validation.check_positive("weight_scale", weight_scale)
  _validation.check_nonnegative("bias_scale", bias_scale)
  _validation.check_choice("activation", activation, ACTIVATIONS)
  make_w = initializers.initializer(init)
  dtype = _validation.float_dtype(dtype)
  kw, kb = jax.random.split(key)
  W0 = jax.vmap(lambda k: make_w(k, (width, width), dtype=dtype))(
      jax.random.split(kw, depth))
  b0 = jax.random.normal(kb, (depth, width), jnp.float32).astype(dtype)
  return MLPParams(W0, b0, jnp.asarray(weight_scale, dtype),
                   jnp.asarray(bias_scale, dtype), activation,
                   _validation.check_bool("batchnorm", batchnorm),
                   _validation.check_bool("residual", residual))


def batchnorm(z: jax.Array, epsilon: float = BATCHNORM_EPSILON) -> jax.Array:
  """Normalises each column of ``z`` (``(batch, width)``) over the batch."""
  mean = jnp.mean(z, axis=0)
  var = jnp.mean(jnp.square(z - mean), axis=0)
  return (z - mean) * jax.lax.rsqrt(var + epsilon)


def step(p: MLPParams, h: jax.Array,
         layer: tuple[jax.Array, jax.Array]) -> jax.Array:
  """One layer: the transition ``step(p, h, (W0_l, b0_l))``.

  Args:
    p: parameters (for the scale and static settings).
    h: ``(batch, width)`` activations.
    layer: ``(W0_l, b0_l)`` of shapes ``(width, width)``, ``(width,)``.

  Returns:
    ``(batch, width)`` next activations, dtype of ``h``.
  """
  W, b = layer
  if h.shape[-1] != p.width:
    raise ValueError(f"x must have last axis {p.width} (width), got shape "
                     f"{h.shape}")
  z = p.weight_scale * (h @ W.T) + p.bias_scale * b
  if p.batchnorm:
    if h.ndim != 2 or h.shape[0] < 2:
      raise ValueError(f"batchnorm needs x of shape (batch >= 2, width), "
                       f"got {h.shape}")
    z = batchnorm(z)
  a = _activation(p.activation).fn(z)
  return (h + a if p.residual else a).astype(h.dtype)


def layers(p: MLPParams) -> tuple[jax.Array, jax.Array]:
  """The per-layer inputs ``xs = (W0, b0)`` to scan ``step`` over."""
  return p.W0, p.b0


def apply(p: MLPParams, x: jax.Array) -> jax.Array:
  """Runs the MLP on a batch ``x`` of shape ``(batch, width)``."""
  _validation.check_finite("params", p)
  _validation.check_finite("x", x)
  if x.ndim != 2 or x.shape[-1] != p.width:
    raise ValueError(f"x must have shape (batch, {p.width}), got {x.shape}")
  return jax.lax.scan(lambda h, l: (step(p, h, l), None), x, layers(p))[0]


@functools.lru_cache(maxsize=None)
def model(width: int, depth: int, *, batch: int = 16,
          activation: str = "tanh", init: str = "gaussian",
          batchnorm: bool = False, residual: bool = False,
          weight_scale: float = 1.0, bias_scale: float = 0.0,
          dtype: Any = None) -> Model:
  """The MLP as a ``Model``: time is depth (the inputs are the layers,
  ``layers(params)``), the state a ``(batch, width)`` input batch ``N(0,
  1)`` per entry; knobs ``weight_scale``, ``bias_scale``. ReLU and linear
  nets without batch norm are homogeneous where ``bias_scale == 0``."""
  width = _validation.check_int("width", width, 1)
  depth = _validation.check_int("depth", depth, 1)
  batch = _validation.check_int("batch", batch, 1)
  _validation.check_choice("activation", activation, ACTIVATIONS)
  initializers.initializer(init)
  batchnorm = _validation.check_bool("batchnorm", batchnorm)
  residual = _validation.check_bool("residual", residual)
  if batchnorm and batch < 2:
    raise ValueError(f"batch must be >= 2 with batchnorm, got {batch}")
  dtype = _validation.float_dtype(dtype)
  settings = dict(width=width, depth=depth, batch=batch,
                  activation=activation, init=init, batchnorm=batchnorm,
                  residual=residual, weight_scale=float(weight_scale),
                  bias_scale=float(bias_scale), dtype=str(dtype))
  homogeneous = (activation in ("relu", "linear") and not batchnorm)
  return Model(
      init=functools.partial(_init, width=width, depth=depth,
                             weight_scale=weight_scale, bias_scale=bias_scale,
                             activation=activation, init=init,
                             batchnorm=batchnorm, residual=residual,
                             dtype=dtype),
      step=step,
      state0=functools.partial(normal_state, shape=(batch, width),
                               dtype=dtype),
      homogeneous=bias_free if homogeneous else False,
      inputs=_layer_inputs, name="mlp", settings=settings)


_init = init   # ``model``'s argument ``init`` shadows the function


def _layer_inputs(p, key, length):
  del key
  if length != p.depth:
    raise ValueError(f"length must equal the MLP's depth {p.depth}, got "
                     f"{length}")
  return layers(p)
