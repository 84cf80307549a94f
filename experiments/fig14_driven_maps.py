"""Driven RNN maps: Gaussian inputs suppress chaos and move the edge of chaos.

A tanh RNN ``h_t = tanh(g W0 h_(t-1) + U x_t)`` (no bias, ``W0`` entries
``N(0, 1/n)``, ``U`` entries ``N(0, 1/n_in)``) reads i.i.d. Gaussian inputs
``x_t ~ N(0, sigma_x^2 I)``, so each unit receives an input current of
variance sigma_x^2, fresh at every step. Over weight scale g, the growth
rate of ``log ||J_T ... J_1 v||`` (the largest Lyapunov exponent, measured
forward in log space) is measured for several input variances, and with it
the critical scale g_c where the rate crosses zero.

Driven mean field (Molgedey, Schuchhardt, Schuster 1992): an input that is
independent across units and steps enters the variance map exactly as an
(annealed) bias does, ``q -> g^2 E[tanh(sqrt(q) z)^2] + sigma_x^2``, so the
largest exponent is ``0.5 log chi_1(g^2, sigma_x^2)`` =
``ex.theory.rnn_lyapunov_max("tanh", g, bias_scale=sigma_x)`` and the
driven edge of chaos is ``g_c = sqrt(critical_sigma_w2("tanh",
sigma_x^2))``: 1 without input, 1.33 at sigma_x^2 = 0.05, 1.86 at 1. The
input keeps the units off the linear slope (larger q*, smaller tanh'), so a
larger g is needed before perturbations grow.

One ``ex.sweep`` per input variance on the built-in RNN with
``input_size = n_in``; the inputs are one array ``sigma_x * xi`` of shape
``(T, n_in)`` (``xi`` a standard normal draw from the figure's key), shared
by all seeds (each seed draws its own ``W0`` and ``U``) and, up to the
factor sigma_x, by all variances. Spreads: 90% percentile bootstrap over
seeds (``GradientMap.rate / critical_scale(interval=0.9)``).

References:
  Molgedey, Schuchhardt, Schuster. Suppressing chaos in neural networks by
  noise. PRL 1992.
  Rajan, Abbott, Sompolinsky. Stimulus-dependent suppression of chaos in
  recurrent neural networks. PRE 2010.

Run: ``python experiments/fig14_driven_maps.py [--quick]``.
"""

from __future__ import annotations

import jax
import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"hidden": 128, "input_size": 64, "length": 128, "seeds": 8,
         "n_scales": 17, "scale_range": [0.8, 2.4],
         "input_variances": [0.0, 0.1, 0.5, 1.0], "key": 0}
FULL = {"hidden": 256, "input_size": 128, "length": 256, "seeds": 10,
        "n_scales": 33, "scale_range": [0.8, 2.4],
        "input_variances": [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
        "key": 0}
CACHE_VERSION = 1

# A tanh state at g < 1 without input decays to exactly 0 in float32.
ALLOW_NONFINITE = {"log_state_norm"}


def driven_critical_scale(input_variance, bias_variance=0.0):
  """The driven mean-field edge of chaos of a tanh RNN.

  Args:
    input_variance: sigma_x^2 >= 0, the variance of each unit's i.i.d.
      input current; float or float array.
    bias_variance: sigma_b^2 >= 0 of a bias (adds to the input's).

  Returns:
    g_c = ``sqrt(critical_sigma_w2("tanh", sigma_b^2 + sigma_x^2))``.
  """
  v = np.asarray(input_variance, np.float64) + bias_variance
  return np.sqrt(ex.theory.critical_sigma_w2("tanh", v))


def compute(config: dict) -> dict[str, np.ndarray]:
  """Rates and critical scales of a tanh RNN at each input variance.

  Args:
    config: ``hidden`` (n), ``input_size`` (n_in), ``length`` (T),
      ``seeds``, ``n_scales``, ``scale_range`` ([lo, hi] of g),
      ``input_variances`` (sigma_x^2 values), ``key`` (int).

  Returns:
    ``weight_scales``: (n_scales,). ``input_variances``: (V,).
    ``log_growth``, ``log_state_norm``: (V, n_scales, T, seeds) natural log.
    ``rate``, ``rate_low``, ``rate_high``: (V, n_scales) nats/step, seed
    mean and 90% bootstrap interval. ``critical_scale``, ``critical_low``,
    ``critical_high``: (V,) measured g_c and its interval.
    ``theory_critical``: (V,) driven mean-field g_c. ``theory_rate``: (V,
    n_scales) ``rnn_lyapunov_max("tanh", g, sigma_x)``. ``n_seeds``: ().
    ``hidden``: ().
  """
  n, n_in, T, seeds = (int(config[k]) for k in
                       ("hidden", "input_size", "length", "seeds"))
  gs = np.linspace(*config["scale_range"], int(config["n_scales"]))
  variances = np.asarray(config["input_variances"], np.float64)
  if np.any(variances < 0):
    raise ValueError(f"input_variances must be >= 0, got {variances}")
  key = int(config["key"])
  xi = np.asarray(jax.random.normal(jax.random.fold_in(
      jax.random.key(key), 1), (T, n_in)))
  model = ex.rnn.model(n, activation="tanh", input_size=n_in)
  maps = [ex.sweep(model, weight_scales=gs, length=T, seeds=seeds, key=key,
                   inputs=np.sqrt(v) * xi, progress=False)
          for v in variances]
  rates = [m.rate(interval=0.9) for m in maps]
  crit = [m.critical_scale(interval=0.9) for m in maps]
  return {
      "weight_scales": gs,
      "input_variances": variances,
      "log_growth": np.stack([m.log_growth for m in maps]),
      "log_state_norm": np.stack([m.log_state_norm for m in maps]),
      "rate": np.stack([r.value for r in rates]),
      "rate_low": np.stack([r.low for r in rates]),
      "rate_high": np.stack([r.high for r in rates]),
      "critical_scale": np.array([c.value for c in crit]),
      "critical_low": np.array([c.low for c in crit]),
      "critical_high": np.array([c.high for c in crit]),
      "theory_critical": driven_critical_scale(variances),
      "theory_rate": np.stack([ex.theory.rnn_lyapunov_max(
          "tanh", gs, np.sqrt(v)) for v in variances]),
      "n_seeds": np.array(seeds),
      "hidden": np.array(n),
  }


def plot(results: dict[str, np.ndarray]):
  """(a) rate vs g per input variance with the driven mean field;
  (b) g_c vs input variance, measured against predicted."""
  fig, (ax_r, ax_c) = plotting.new_figure(1, 2, width="full", height=2.7)
  gs, variances = results["weight_scales"], results["input_variances"]
  with plotting.paper_style():
    colors = _colors(len(variances))
    for i, v in enumerate(variances):
      c = colors[i]
      ax_r.fill_between(gs, results["rate_low"][i], results["rate_high"][i],
                        color=c, alpha=0.3, lw=0)
      ax_r.plot(gs, results["rate"][i], "o", ms=2, color=c,
                label=f"$\\sigma_x^2$ = {v:g}")
      ax_r.plot(gs, results["theory_rate"][i], "-", lw=0.8, color=c)
    ax_r.axhline(0, color="0.5", lw=0.5)
    ax_r.set_ylim(-0.7, 0.3)
    ax_r.set_xlabel("weight scale $g$ ($\\sigma_w$)")
    ax_r.set_ylabel("growth rate (nats / step)")
    ax_r.set_title("rate: measured (dots, 90% band), driven MF (lines)")
    ax_r.legend(loc="lower right", fontsize=6, ncol=2)

    vv = np.linspace(0, max(variances.max(), 1e-3), 300)
    ax_c.plot(vv, driven_critical_scale(vv), "k-", lw=0.9,
              label="driven mean field\n"
                    "$\\sqrt{\\sigma^2_{w,c}(\\tanh, \\sigma_x^2)}$")
    yerr = np.stack([results["critical_scale"] - results["critical_low"],
                     results["critical_high"] - results["critical_scale"]])
    ax_c.errorbar(variances, results["critical_scale"], yerr=yerr, fmt="o",
                  ms=3, capsize=2, color="C3", label="measured $g_c$ "
                  "(90% bootstrap)")
    ax_c.set_xlabel("input variance $\\sigma_x^2$")
    ax_c.set_ylabel("critical scale $g_c$")
    ax_c.set_title("inputs move the edge of chaos")
    ax_c.legend(loc="lower right", fontsize=6)
    plotting.label_panels([ax_r, ax_c])
    T = results["log_growth"].shape[-2]
    fig.suptitle(
        f"Driven tanh RNN, {int(results['hidden'])} units, T = {T}, "
        f"{int(results['n_seeds'])} seeds: i.i.d. Gaussian inputs suppress "
        "chaos", fontsize=7)
  return fig


def _colors(k: int) -> list:
  """``k`` colours from light to dark along one colour map."""
  import matplotlib
  cmap = matplotlib.colormaps["viridis"]
  return [cmap(x) for x in np.linspace(0.0, 0.9, k)]


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
