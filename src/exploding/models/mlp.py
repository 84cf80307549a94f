"""Multilayer perceptron as a chain of transitions, one per layer.

Layer ``l`` maps a batch ``h`` of shape ``(batch, width)`` to

  z = g * (h @ W0_l^T) + b_l;  z = BN(z) if batchnorm;  a = phi(z);
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

import flax.struct
import jax
import jax.numpy as jnp

from exploding import _validation, initializers
from exploding.activations import ACTIVATIONS, activation as _activation

__all__ = ["MLPParams", "init", "step", "layers", "apply", "batchnorm",
           "BATCHNORM_EPSILON"]

BATCHNORM_EPSILON = 1e-5


@flax.struct.dataclass
class MLPParams:
  """Parameters of an MLP; every array is a pytree leaf.

  Attributes:
    W0: ``(depth, width, width)`` layer matrices at unit scale.
    b: ``(depth, width)`` biases.
    weight_scale: ``()`` gain applied after each matmul.
    activation, batchnorm, residual: static settings.
  """

  W0: jax.Array
  b: jax.Array
  weight_scale: jax.Array
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
  b = bias_scale * jax.random.normal(kb, (depth, width), jnp.float32)
  return MLPParams(W0, b.astype(dtype), jnp.asarray(weight_scale, dtype),
                   activation, bool(batchnorm), bool(residual))


def batchnorm(z: jax.Array, epsilon: float = BATCHNORM_EPSILON) -> jax.Array:
  """Normalises each column of ``z`` (``(batch, width)``) over the batch."""
  mean = jnp.mean(z, axis=0)
  var = jnp.mean(jnp.square(z - mean), axis=0)
  return (z - mean) * jax.lax.rsqrt(var + epsilon)


def step(p: MLPParams, h: jax.Array,
         layer: tuple[jax.Array, jax.Array]) -> jax.Array:
  """One layer: the transition ``f(h, (W0_l, b_l))``.

  Args:
    p: parameters (for the scale and static settings).
    h: ``(batch, width)`` activations.
    layer: ``(W0_l, b_l)`` of shapes ``(width, width)``, ``(width,)``.

  Returns:
    ``(batch, width)`` next activations, dtype of ``h``.
  """
  W, b = layer
  if h.shape[-1] != p.width:
    raise ValueError(f"x must have last axis {p.width} (width), got shape "
                     f"{h.shape}")
  z = p.weight_scale * (h @ W.T) + b
  if p.batchnorm:
    if h.ndim != 2 or h.shape[0] < 2:
      raise ValueError(f"batchnorm needs x of shape (batch >= 2, width), "
                       f"got {h.shape}")
    z = batchnorm(z)
  a = _activation(p.activation).fn(z)
  return (h + a if p.residual else a).astype(h.dtype)


def layers(p: MLPParams) -> tuple[jax.Array, jax.Array]:
  """The per-layer inputs ``xs = (W0, b)`` to scan ``step`` over."""
  return p.W0, p.b


def apply(p: MLPParams, x: jax.Array) -> jax.Array:
  """Runs the MLP on a batch ``x`` of shape ``(batch, width)``."""
  _validation.check_finite("params", p)
  _validation.check_finite("x", x)
  if x.ndim != 2 or x.shape[-1] != p.width:
    raise ValueError(f"x must have shape (batch, {p.width}), got {x.shape}")
  return jax.lax.scan(lambda h, l: (step(p, h, l), None), x, layers(p))[0]
