"""Lyapunov spectra of random tanh RNNs: the edge of chaos at g = 1.

The autonomous recurrence ``h -> tanh(g W h)``, ``W_ij ~ N(0, 1/n)``, is
ordered for ``g < 1`` (every tangent shrinks: gradients vanish at the rate
``lambda_max = log g``) and chaotic for ``g > 1`` (``lambda_max > 0``:
gradients explode). The k leading Lyapunov exponents are measured by
``ex.sweep(..., method="lyapunov", k=k)`` (QR re-orthonormalisation of k
tangents every step, Benettin et al. 1980) over the grid of g and seeds in
one compiled program; each seed's ``W`` is shared by every g. The largest
exponent is compared with the mean-field prediction
``ex.theory.rnn_lyapunov_max("tanh", g) = 0.5 log chi_1`` (Sompolinsky,
Crisanti & Sommers 1988), exact as n -> inf; at finite n the ordered side
sits above ``log g`` by the spectral radius excess of W.

Run: ``python experiments/fig09_lyapunov_spectra.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"hidden": 32, "k": 16, "length": 200,
         "weight_scales": [0.5, 0.8, 0.95, 1.1, 1.3, 1.6, 2.0, 3.0],
         "spectrum_scales": [0.5, 0.95, 1.3, 2.0, 3.0], "seeds": 2,
         "key": 0}
FULL = {"hidden": 128, "k": 64, "length": 600,
        "weight_scales": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1,
                          1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0],
        "spectrum_scales": [0.5, 0.9, 1.2, 1.5, 2.0, 3.0, 4.0], "seeds": 2,
        "key": 0}
CACHE_VERSION = 3


def compute(config: dict) -> dict[str, np.ndarray]:
  """The k leading exponents on a grid of g, and the mean-field line.

  Args:
    config: ``hidden`` (n), ``k`` (exponents, <= n), ``length`` (steps T),
      ``weight_scales`` (g grid), ``spectrum_scales`` (the g whose spectra
      are drawn; must be in the grid), ``seeds``, ``key``.

  Returns:
    ``weight_scales``: (n_g,). ``exponents``: (n_g, k, seeds) per step,
    natural log, largest first. ``running_max``: (n_g, T, seeds), the
    running estimate ``sum_{s<=t} log|R_s[0,0]| / t`` of the largest one.
    ``theory_g``, ``theory_max``: (200,) the mean-field curve.
    ``spectrum_index``: (n_spec,) int, rows of the grid to draw as spectra.
    ``hidden``, ``length``: () ints.
  """
  gs = np.asarray(config["weight_scales"], dtype=np.float64)
  length = int(config["length"])
  m = ex.sweep("rnn", weight_scales=gs, length=length,
               seeds=int(config["seeds"]), method="lyapunov",
               k=int(config["k"]), key=int(config["key"]),
               hidden=int(config["hidden"]), activation="tanh",
               progress=False)
  steps = np.arange(1, length + 1)
  theory_g = np.geomspace(gs.min(), gs.max(), 200)
  index = np.array([int(np.argmin(np.abs(gs - g)))
                    for g in config["spectrum_scales"]])
  return {
      "weight_scales": gs,
      "exponents": np.asarray(m.exponents, np.float64),
      # log_growth of a Lyapunov sweep: the running sum of the top exponent.
      "running_max": np.asarray(m.log_growth, np.float64)
                     / steps[None, :, None],
      "theory_g": theory_g,
      "theory_max": np.asarray(ex.theory.rnn_lyapunov_max("tanh", theory_g)),
      "spectrum_index": index,
      "hidden": np.asarray(int(config["hidden"])),
      "length": np.asarray(length),
  }


def plot(results: dict[str, np.ndarray]):
  """(a) spectra vs index, (b) lambda_max vs g with theory, (c) convergence."""
  fig, (ax_spec, ax_max, ax_conv) = plotting.new_figure(
      1, 3, width="full", height=2.7,
      gridspec_kw={"width_ratios": [1.1, 1.1, 0.9]})
  gs = results["weight_scales"]
  expo = results["exponents"]                       # (n_g, k, seeds)
  n = int(results["hidden"])
  k = expo.shape[1]
  mean = expo.mean(-1)
  index = results["spectrum_index"]
  colors = [plotting.PALETTE[i % 7] for i in (0, 5, 2, 3, 1, 4, 6)]
  with plotting.paper_style():
    for c, i in enumerate(index):
      color = colors[c % len(colors)]
      n_pos = int(np.sum(mean[i] > 0))
      ax_spec.plot(np.arange(1, k + 1), mean[i], color=color, marker="o",
                   ms=1.8, lw=0.9, label=f"g = {gs[i]:g}: {n_pos}")
    ax_spec.axhline(0.0, color="0.5", lw=0.5)
    ax_spec.set_xlabel(f"exponent index i (of n = {n})")
    ax_spec.set_ylabel("Lyapunov exponent $\\lambda_i$ (nats / step)")
    ax_spec.set_title(f"{k} leading exponents")
    ax_spec.legend(loc="lower left", fontsize=6, ncol=2,
                   title="g: number of $\\lambda_i > 0$", title_fontsize=6)

    lam = expo[:, 0, :]
    ax_max.plot(results["theory_g"], results["theory_max"], color="k",
                lw=1.0, label="mean field $\\frac{1}{2}\\log\\chi_1$ "
                              "($n\\to\\infty$)")
    ax_max.plot(results["theory_g"], np.log(results["theory_g"]),
                color="0.5", ls=":", lw=0.9, label="$\\log g$ (linearised)")
    ax_max.errorbar(gs, lam.mean(-1), yerr=lam.std(-1) if lam.shape[-1] > 1
                    else None, ls="none", marker="o", ms=3,
                    color=plotting.PALETTE[1], capsize=1.5, elinewidth=0.7,
                    label=f"measured $\\lambda_1$, n = {n}")
    ax_max.axhline(0.0, color="0.5", lw=0.5)
    ax_max.axvline(1.0, color="0.5", lw=0.5, ls="--")
    ax_max.set_xlabel("weight scale g")
    ax_max.set_ylabel("largest exponent $\\lambda_1$ (nats / step)")
    err = _worst_gap(results)
    ax_max.set_title("ordered g < 1, chaotic g > 1")
    ax_max.text(0.98, 0.03, f"g >= 1.5: max |measured - theory|\n"
                f"= {err:.3f} nats / step (finite n)",
                transform=ax_max.transAxes, ha="right", va="bottom",
                fontsize=6)
    ax_max.legend(loc="upper left", fontsize=6)

    steps = np.arange(1, int(results["length"]) + 1)
    for c, i in enumerate(index):
      ax_conv.plot(steps, results["running_max"][i].mean(-1),
                   color=colors[c % len(colors)], lw=0.9)
      ax_conv.axhline(float(np.interp(gs[i], results["theory_g"],
                                      results["theory_max"])),
                      color=colors[c % len(colors)], lw=0.6, ls="--")
    ax_conv.set_xscale("log")
    ax_conv.set_xlabel("steps t")
    ax_conv.set_ylabel("running estimate of $\\lambda_1$")
    ax_conv.set_title("convergence (colours as in a)")
    ax_conv.text(0.98, 0.5, "dashed: mean field", transform=ax_conv.transAxes,
                 ha="right", fontsize=6, color="0.3")
    plotting.label_panels([ax_spec, ax_max, ax_conv])
  return fig


def _worst_gap(results):
  gs = results["weight_scales"]
  lam = results["exponents"][:, 0, :].mean(-1)
  theory = np.asarray(ex.theory.rnn_lyapunov_max("tanh", gs))
  sel = gs >= 1.5
  return float(np.max(np.abs(lam[sel] - theory[sel]))) if sel.any() else (
      float("nan"))


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
