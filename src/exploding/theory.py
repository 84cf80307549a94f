"""What theory predicts for gradient growth, to draw on measured maps.

Every prediction is a per-layer (or per-step) growth factor of a squared
gradient norm at initialisation, or its natural log; measured growth of a
norm, ``log ||J_t ... J_1 v||``, rises by half the log of it per layer.

* Mean field (Poole et al. 2016; Schoenholz et al. 2017): ``q_star``,
  ``chi1``, ``critical_sigma_w2``, ``c_star``, ``depth_scale_q``,
  ``depth_scale_c``. A wide layer with weight variance ``sigma_w2 / n`` and
  bias variance ``sigma_b2`` multiplies squared gradients by
  ``chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]``; ``chi_1 = 1`` is the edge of
  chaos.
* Recurrent and gated nets: ``rnn_lyapunov_max`` (``0.5 log chi_1`` at q*),
  ``pascanu_vanishing_bound`` (``1 / sup|phi'|``, Pascanu et al. 2013),
  ``lstm_forget_gradient`` and ``lstm_memory_time`` (the cell path at zero
  recurrent weights).
* Finite networks: a recurrent net's one tied ``W0`` sets its ordered rate,
  ``log rho(J*)`` at its fixed point (``log(g rho(W0))`` for tanh and
  linear): ``tied_ordered_rate``, ``tied_critical_scale``,
  ``spectral_radius``, ``sweep_params`` (the ``W0`` a sweep drew per
  seed). A layer of finite width n grows one input's gradient by ``E log``
  of its factor, O(1/n) below ``log chi_1``: ``quenched_log_gradient_rate``,
  ``quenched_log_gradient``, ``quenched_critical_sigma_w2``.
* Residual nets (Yang & Schoenholz 2017), with the cross term of
  nonzero-mean activations (ReLU) that mean field drops:
  ``residual_gradient_rate``, ``residual_log_gradient(..., width=n)``.
* Batch norm (Yang et al. 2019): ``batchnorm_gradient_rate``,
  ``batchnorm_log_gradient_rate``; exact for linear and ReLU.
* Spectra and fluctuations: ``jacobian_spectrum_moments`` (Pennington et al.
  2017), ``hanin_gradient_fluctuation`` (Hanin 2018; exact at finite width).
* Float formats: ``dtype_limits``, ``overflow_step``, ``underflow_step``.

Everything is numpy in float64 (jax only to differentiate user activations);
``activation`` is a name or an ``exploding.Activation``; scalar arguments
marked so accept float arrays and broadcast. Bad input raises ``ValueError``
naming the argument.

References:
  Poole, Lahiri, Raghu, Sohl-Dickstein, Ganguli. Exponential expressivity in
  deep neural networks through transient chaos. NeurIPS 2016.
  Schoenholz, Gilmer, Ganguli, Sohl-Dickstein. Deep information propagation.
  ICLR 2017.
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013.
  Yang, Schoenholz. Mean field residual networks: on the edge of chaos.
  NeurIPS 2017.
  Pennington, Schoenholz, Ganguli. Resurrecting the sigmoid in deep learning
  through dynamical isometry. NeurIPS 2017.
  Hanin. Which neural net architectures give rise to exploding and
  vanishing gradients? NeurIPS 2018.
  Yang, Pennington, Rao, Sohl-Dickstein, Schoenholz. A mean field theory of
  batch normalization. ICLR 2019.

Example:
  >>> from exploding import theory
  >>> theory.chi1("relu", 2.0, 0.0)
  1.0
  >>> round(theory.critical_sigma_w2("tanh", 0.05), 3)
  1.761
"""

from exploding._theory_batchnorm import batchnorm_gradient_rate
from exploding._theory_batchnorm import batchnorm_log_gradient_rate
from exploding._theory_floats import DtypeLimits
from exploding._theory_floats import dtype_limits
from exploding._theory_floats import overflow_step
from exploding._theory_floats import underflow_step
from exploding._theory_gradients import hanin_gradient_fluctuation
from exploding._theory_gradients import jacobian_spectrum_moments
from exploding._theory_gradients import lstm_forget_gradient
from exploding._theory_gradients import lstm_memory_time
from exploding._theory_gradients import pascanu_vanishing_bound
from exploding._theory_gradients import rnn_lyapunov_max
from exploding._theory_meanfield import c_star
from exploding._theory_meanfield import chi1
from exploding._theory_meanfield import critical_sigma_w2
from exploding._theory_meanfield import depth_scale_c
from exploding._theory_meanfield import depth_scale_q
from exploding._theory_meanfield import q_star
from exploding._theory_quenched import quenched_critical_sigma_w2
from exploding._theory_quenched import quenched_log_gradient
from exploding._theory_quenched import quenched_log_gradient_rate
from exploding._theory_residual import residual_gradient_rate
from exploding._theory_residual import residual_log_gradient
from exploding._theory_tied import spectral_radius
from exploding._theory_tied import sweep_params
from exploding._theory_tied import tied_critical_scale
from exploding._theory_tied import tied_ordered_rate

__all__ = [
    "DtypeLimits",
    "batchnorm_gradient_rate",
    "batchnorm_log_gradient_rate",
    "c_star",
    "chi1",
    "critical_sigma_w2",
    "depth_scale_c",
    "depth_scale_q",
    "dtype_limits",
    "hanin_gradient_fluctuation",
    "jacobian_spectrum_moments",
    "lstm_forget_gradient",
    "lstm_memory_time",
    "overflow_step",
    "pascanu_vanishing_bound",
    "q_star",
    "quenched_critical_sigma_w2",
    "quenched_log_gradient",
    "quenched_log_gradient_rate",
    "residual_gradient_rate",
    "residual_log_gradient",
    "rnn_lyapunov_max",
    "spectral_radius",
    "sweep_params",
    "tied_critical_scale",
    "tied_ordered_rate",
    "underflow_step",
]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)
