"""exploding: map where gradients vanish or explode, and why."""

__version__ = "0.2.0"

from exploding import initializers
from exploding import models
from exploding import plotting
from exploding import theory
from exploding import clipping
from exploding import tasks
from exploding import cliff
from exploding import train
from exploding.activations import Activation
from exploding.activations import activation
from exploding.models import lstm
from exploding.models import mlp
from exploding.models import rnn
from exploding.models import Model
from exploding.jacobian import Growth
from exploding.jacobian import LyapunovSpectrum
from exploding.jacobian import jacobian_singular_values
from exploding.jacobian import jvp_growth
from exploding.jacobian import lyapunov_spectrum
from exploding.jacobian import vjp_growth
from exploding.maps import Estimate, GradientMap, seed_mean
from exploding.sweep import sweep
from exploding.monitor import MonitorHistory, MonitorState, SkipState
from exploding.monitor import monitor, monitor_history, plot_monitor
from exploding.monitor import skip_if_log_norm_jumps
from exploding.remedies import RemedyComparison
from exploding.remedies import compare_remedies

__all__ = [
    "Activation", "Estimate", "GradientMap", "Growth", "LyapunovSpectrum",
    "Model", "RemedyComparison", "activation", "cliff", "clipping", "compare_remedies",
    "initializers", "jacobian_singular_values",
    "jvp_growth", "lstm", "lyapunov_spectrum", "mlp", "models", "plotting",
    "rnn", "seed_mean", "sweep", "tasks", "theory", "train", "vjp_growth",
    "MonitorHistory", "MonitorState", "SkipState", "monitor", "monitor_history",
    "plot_monitor", "skip_if_log_norm_jumps",
]
