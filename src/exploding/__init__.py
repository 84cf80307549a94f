"""exploding: map where gradients vanish or explode, and why."""

__version__ = "0.1.0"

from exploding.activations import Activation, activation
from exploding import initializers
