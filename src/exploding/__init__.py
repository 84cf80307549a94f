"""exploding: map where gradients vanish or explode, and why."""

__version__ = "0.1.0"

from exploding.activations import Activation, activation
from exploding import initializers
from exploding import models
from exploding.models import lstm, mlp, rnn
from exploding.jacobian import (Growth, LyapunovSpectrum, jvp_growth,
                                vjp_growth, lyapunov_spectrum,
                                jacobian_singular_values, is_homogeneous)
from exploding import theory, clipping, tasks, cliff
from exploding.maps import GradientMap
from exploding.sweep import sweep
from exploding.remedies import RemedyComparison, compare_remedies
from exploding import train
from exploding import plotting
