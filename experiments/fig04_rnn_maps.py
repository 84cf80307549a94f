"""RNN gradient maps: where linear, tanh, ReLU, sigmoid RNNs vanish or explode.

For ``h_t = phi(g W0 h_(t-1))`` (no bias, no input, ``W0`` entries
``N(0, 1/n)``) the growth ``log10 ||J_T ... J_1 v||`` of a random unit
tangent, measured forward (JVP) in log space, is mapped over weight scale g
and sequence length T. On each map: the measured critical scale (where the
growth rate per step crosses 0; its spread over seeds in the legend), the
mean-field edge of chaos (``chi_1 = 1``: ``g = sqrt(critical_sigma_w2(phi,
0))``, 1 for linear and tanh, sqrt(2) for ReLU, 9.9 for sigmoid) and
Pascanu et al.'s sufficient condition for vanishing, ``sigma_max(g W0) <
1 / gamma``, placed on the g axis with the measured ``sigma_max(W0)``
(about 2 for a square Gaussian matrix), so at
``g = 1 / (gamma sigma_max(W0))``.

One ``ex.sweep`` per activation (the activation is a setting, so each is
its own compiled program); every sweep draws the same seeds, so all four
maps share each seed's ``W0``. The built-in RNN declares linear and ReLU
homogeneous (no bias), so their state is renormalised and never overflows.

Run: ``python experiments/fig04_rnn_maps.py [--quick]``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import exploding as ex
from exploding import plotting

ACTIVATIONS = ("linear", "tanh", "relu", "sigmoid")
# (lo, hi, log-spaced?) weight scales per activation, around each transition.
SCALE_RANGES = {"linear": (0.3, 1.7, False), "tanh": (0.3, 2.3, False),
                "relu": (0.3, 2.6, False), "sigmoid": (1.0, 20.0, True)}

QUICK = {"hidden": 32, "length": 64, "n_scales": 12, "seeds": 2, "key": 0}
FULL = {"hidden": 128, "length": 256, "n_scales": 40, "seeds": 4, "key": 0}
CACHE_VERSION = 2   # bump when compute() changes (2: one ex.sweep each)

# A tanh state at g < 1 decays to exactly 0 in float32: log ||h_t|| = -inf
# there (the growth, measured on the tangent, stays finite). A seed whose
# rate never crosses 0 on the grid has critical scale NaN.
ALLOW_NONFINITE = {"log_state_norm", "critical_scale_seeds"}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Growth maps of the four RNNs, critical scales and theory lines.

  Args:
    config: ``hidden`` (n), ``length`` (T), ``n_scales``, ``seeds``, ``key``
      (int, the sweeps' key).

  Returns:
    ``log_growth``, ``log_state_norm``: (4, n_scales, T, seeds) natural log,
    activations in ``ACTIVATIONS`` order. ``overflow_step``: (4, n_scales,
    seeds). ``weight_scales``: (4, n_scales). ``steps``: (T,).
    ``hidden``: () n. ``rate``: (4, n_scales) nats/step.
    ``critical_scale``: (4,) measured on the seed-mean rate.
    ``critical_scale_seeds``: (4, seeds) measured on each seed alone.
    ``mean_field``: (4,) ``sqrt(critical_sigma_w2(phi, 0))``.
    ``gamma``: (4,) ``sup |phi'|``. ``sigma_max_w0``: (seeds,) largest
    singular value of ``seeds`` independent draws of ``W0`` (the sweeps'
    own draws stay inside them; same distribution). ``pascanu``: (4,)
    ``pascanu_vanishing_bound / mean sigma_max(W0)``, a weight scale.
  """
  n, T, seeds = (int(config[k]) for k in ("hidden", "length", "seeds"))
  maps = [ex.sweep("rnn", activation=a, hidden=n, length=T, seeds=seeds,
                   key=int(config["key"]), progress=False,
                   weight_scales=_scale_grid(a, int(config["n_scales"])))
          for a in ACTIVATIONS]
  draws = jax.random.split(jax.random.key(int(config["key"])), seeds)
  smax = np.array([np.linalg.norm(np.asarray(ex.rnn.init(k, n).W0,
                                             np.float64), ord=2)
                   for k in draws])
  bound = np.array([ex.theory.pascanu_vanishing_bound(a) for a in ACTIVATIONS])
  stack = lambda f: np.stack([f(m) for m in maps])
  return {
      "log_growth": stack(lambda m: m.log_growth),
      "log_state_norm": stack(lambda m: m.log_state_norm),
      "overflow_step": stack(lambda m: m.overflow_step),
      "weight_scales": stack(lambda m: m.weight_scales),
      "steps": maps[0].steps,
      "hidden": np.array(n),
      "rate": stack(lambda m: m.rate()),
      "critical_scale": stack(lambda m: m.critical_scale()),
      "critical_scale_seeds": stack(_critical_per_seed),
      "mean_field": np.array([np.sqrt(ex.theory.critical_sigma_w2(a, 0.0))
                              for a in ACTIVATIONS]),
      "gamma": np.array([ex.activation(a).gamma for a in ACTIVATIONS]),
      "sigma_max_w0": smax,
      "pascanu": bound / smax.mean(),
  }


def plot(results: dict[str, np.ndarray]):
  """A 2 x 2 grid of maps, each with measured and predicted critical scales."""
  fig, axes = plotting.new_figure(2, 2, width="full", height=5.4)
  smax = float(np.mean(results["sigma_max_w0"]))
  with plotting.paper_style():
    for i, (ax, name) in enumerate(zip(axes.flat, ACTIVATIONS)):
      m = _as_map(results, i)
      plotting.draw_growth_map(ax, m, critical=False, legend=False)
      gc = results["critical_scale"][i]
      if np.isfinite(gc):
        ax.axvline(gc, color="k", lw=1.0, label=f"measured $g_c$ = {gc:.2f}"
                   + _seed_range(results["critical_scale_seeds"][i]))
      plotting.draw_theory_lines(ax, {
          "mean field $\\chi_1 = 1$": results["mean_field"][i],
          "Pascanu $g\\,\\sigma_{max}(W_0) = 1/\\gamma$":
              results["pascanu"][i]})
      if SCALE_RANGES[name][2]:
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 20], ["1", "2", "5", "10", "20"])
        ax.set_xticks([], minor=True)
      gamma = results["gamma"][i]
      ax.set_title(f"{name} RNN ($\\gamma$ = sup|$\\phi'$| = {gamma:g})")
      ax.set_xlabel("weight scale $g$ ($\\sigma_w$)")
      ax.legend(loc="upper left", fontsize=6, frameon=True, framealpha=0.85,
                handlelength=2.2)
    plotting.label_panels(axes)
    n = results["log_growth"].shape[-1]
    fig.suptitle(
        f"{int(results['hidden'])}-unit RNNs: log$_{{10}}$ of the JVP growth "
        f"$\\|J_T\\cdots J_1 v\\|$, mean of {n} seeds; black contour: "
        f"growth = 1; Pascanu bound placed with the "
        f"measured $\\sigma_{{max}}(W_0)$ = {smax:.2f}", fontsize=7)
  return fig


def _scale_grid(name: str, n_scales: int) -> np.ndarray:
  lo, hi, log = SCALE_RANGES[name]
  return np.geomspace(lo, hi, n_scales) if log else np.linspace(lo, hi,
                                                                n_scales)


def _seed_range(per_seed: np.ndarray) -> str:
  """`` (seeds lo-hi)`` over the seeds that cross, or ``""``."""
  crossed = per_seed[np.isfinite(per_seed)]
  if crossed.size < 2:
    return ""
  return f" (seeds {crossed.min():.2f}-{crossed.max():.2f})"


def _critical_per_seed(m: ex.GradientMap) -> np.ndarray:
  """``(seeds,)``: the critical scale of each seed's map alone."""
  return np.array([dataclasses.replace(
      m, log_growth=m.log_growth[..., [s]],
      log_state_norm=m.log_state_norm[..., [s]],
      overflow_step=m.overflow_step[..., [s]]).critical_scale()
                   for s in range(m.log_growth.shape[-1])])


def _as_map(results, i: int) -> ex.GradientMap:
  """Activation ``i``'s map, rebuilt from the (cached) result arrays."""
  return ex.GradientMap(
      log_growth=results["log_growth"][i],
      log_state_norm=results["log_state_norm"][i],
      overflow_step=results["overflow_step"][i],
      axes={"weight_scale": results["weight_scales"][i]},
      steps=results["steps"], config={"model": "rnn", "method": "jvp"})


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
