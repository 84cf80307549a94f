"""Elementwise nonlinearities and the bound on their slope.

Each activation carries ``gamma = sup_x |phi'(x)|``. Pascanu et al. (2013,
Section 3.1) show that if the largest singular value of the recurrent matrix
is below ``1 / gamma`` the gradient of a vanilla RNN must vanish; ``gamma``
is the only property of ``phi`` that their bound needs.

References:
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Activation", "activation", "ACTIVATIONS"]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


class Activation(NamedTuple):
  """A named elementwise nonlinearity.

  Attributes:
    name: the registry name, e.g. ``"tanh"``.
    fn: the function, elementwise on arrays of any shape and float dtype.
    gamma: ``sup_x |fn'(x)|``, the constant of Pascanu et al.'s bound.
  """

  name: str
  fn: Callable[[jax.Array], jax.Array]
  gamma: float


def _hard_tanh(x):
  return jnp.clip(x, -1.0, 1.0)


def _linear(x):
  return x


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", jnp.tanh, 1.0),
    "relu": Activation("relu", jax.nn.relu, 1.0),
    "sigmoid": Activation("sigmoid", jax.nn.sigmoid, 0.25),
    "linear": Activation("linear", _linear, 1.0),
    "hard_tanh": Activation("hard_tanh", _hard_tanh, 1.0),
    "erf": Activation("erf", jax.scipy.special.erf, 2.0 / math.sqrt(math.pi)),
}


def activation(name: str | Activation) -> Activation:
  """Looks up an activation by name.

  Args:
    name: one of ``"tanh"``, ``"relu"``, ``"sigmoid"``, ``"linear"``,
      ``"hard_tanh"``, ``"erf"``; an ``Activation`` is returned unchanged.

  Returns:
    The ``Activation(name, fn, gamma)``.

  Raises:
    ValueError: for an unknown name, listing the valid ones.

  Example:
    >>> import exploding as ex
    >>> ex.activation("sigmoid").gamma
    0.25
  """
  if isinstance(name, Activation):
    return name
  if not isinstance(name, str) or name not in ACTIVATIONS:
    raise ValueError(
        f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]
