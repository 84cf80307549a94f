"""Lyapunov spectra of random tanh RNNs: mean field and finite n.

The autonomous recurrence ``h -> tanh(g W h)``, ``W_ij ~ N(0, 1/n)``, is
ordered for small g (every tangent shrinks: gradients vanish) and chaotic
for large g (``lambda_max > 0``: gradients explode). The k leading Lyapunov
exponents are measured by ``ex.sweep(..., method="lyapunov", k=k)`` (QR
re-orthonormalisation of k tangents every step, Benettin et al. 1980) over
the grid of g and seeds in one compiled program per width; each seed's
``W`` is shared by every g. The largest exponent is compared with

* mean field, ``ex.theory.rnn_lyapunov_max("tanh", g) = 0.5 log chi_1``
  (Sompolinsky, Crisanti & Sommers 1988), exact as n -> inf: ``log g`` for
  g <= 1, positive above;
* at finite n in the ordered phase, where the state decays to 0 and the
  Jacobian becomes ``g W``: ``log g + log rho(W)``, rho the spectral radius
  (> 1 at finite n: the circular law's edge). The band is the 5-95% range
  of ``log rho`` over independent draws of W (numpy, ``rho_draws`` of them;
  not the sweep's own draws).

Just above g = 1 mean field predicts weak chaos, ``lambda_max ~ (g - 1)^2``,
but a finite network there often settles on a fixed point or a limit cycle
(``lambda_max <= 0``); the gap closes as n grows (two widths drawn).
Spreads: each point is the seed mean with its 90% percentile bootstrap
interval over seeds (resampled 2000 times; what ``GradientMap.rate(
interval=0.9)`` does for rates).

Run: ``python experiments/fig09_lyapunov_spectra.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"hiddens": [32], "k": 8, "length": 150,
         "weight_scales": [0.5, 0.8, 0.95, 1.1, 1.3, 1.6, 2.0, 3.0],
         "spectrum_scales": [0.5, 0.95, 1.3, 2.0, 3.0], "seeds": 8,
         "rho_draws": 16, "key": 0}
FULL = {"hiddens": [128, 256], "k": 32, "length": 1000,
        "weight_scales": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1,
                          1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0],
        "spectrum_scales": [0.5, 0.9, 1.2, 1.5, 2.0, 3.0, 4.0], "seeds": 8,
        "rho_draws": 64, "key": 0}
CACHE_VERSION = 4
LEVEL = 0.9


def compute(config: dict) -> dict[str, np.ndarray]:
  """The k leading exponents on a grid of g, per width, and theory.

  Args:
    config: ``hiddens`` (increasing widths n), ``k`` (exponents, <= min n),
      ``length`` (steps T), ``weight_scales`` (g grid), ``spectrum_scales``
      (the g whose spectra are drawn; nearest grid values), ``seeds``,
      ``rho_draws`` (W draws for the spectral-radius band), ``key``.

  Returns:
    ``weight_scales``: (n_g,). ``hiddens``: (n_h,) int. ``exponents``:
    (n_h, n_g, k, seeds) per step, natural log, largest first.
    ``lambda_max``, ``lambda_low``, ``lambda_high``: (n_h, n_g) seed mean
    of the largest exponent and its 90% bootstrap interval.
    ``running_max``: (n_g, T) the seed mean of the running estimate
    ``sum_{s<=t} log|R_s[0,0]| / t`` at the largest width.
    ``theory_g``, ``theory_max``: (200,) the mean-field curve;
    ``theory_at_grid``: (n_g,). ``log_rho``: (n_h, 3) 5%, 50%, 95% of
    ``log rho(W)``. ``spectrum_index``: (n_spec,) int rows of the grid
    drawn as spectra. ``length``: () int.
  """
  gs = np.asarray(config["weight_scales"], dtype=np.float64)
  hiddens = np.asarray(config["hiddens"], dtype=np.int64)
  length, seeds = int(config["length"]), int(config["seeds"])
  if seeds < 2 or np.any(np.diff(hiddens) <= 0):
    raise ValueError(f"need seeds >= 2 and increasing hiddens; got {seeds},"
                     f" {hiddens.tolist()}")
  exponents, running = [], None
  for n in hiddens:
    m = ex.sweep("rnn", weight_scales=gs, length=length, seeds=seeds,
                 method="lyapunov", k=int(config["k"]),
                 key=int(config["key"]), hidden=int(n), activation="tanh",
                 progress=False)
    exponents.append(np.asarray(m.exponents, np.float64))
    # log_growth of a Lyapunov sweep: the running sum of the top exponent.
    running = (np.asarray(m.log_growth, np.float64).mean(-1)
               / np.arange(1, length + 1)[None, :])
  exponents = np.stack(exponents)                  # (n_h, n_g, k, seeds)
  lam, lam_low, lam_high = _bootstrap_mean(exponents[:, :, 0, :])
  rng = np.random.default_rng(int(config["key"]))
  log_rho = np.array([np.percentile([
      np.log(np.abs(np.linalg.eigvals(
          rng.standard_normal((n, n)) / np.sqrt(n))).max())
      for _ in range(int(config["rho_draws"]))], [5, 50, 95])
      for n in hiddens])
  theory_g = np.geomspace(gs.min(), gs.max(), 200)
  index = np.array([int(np.argmin(np.abs(gs - g)))
                    for g in config["spectrum_scales"]])
  return {
      "weight_scales": gs,
      "hiddens": hiddens,
      "exponents": exponents,
      "lambda_max": lam, "lambda_low": lam_low, "lambda_high": lam_high,
      "running_max": running,
      "theory_g": theory_g,
      "theory_max": np.asarray(ex.theory.rnn_lyapunov_max("tanh", theory_g)),
      "theory_at_grid": np.asarray(ex.theory.rnn_lyapunov_max("tanh", gs)),
      "log_rho": log_rho,
      "spectrum_index": index,
      "length": np.asarray(length),
  }


def _bootstrap_mean(values):
  """Seed mean over the last axis and its percentile bootstrap interval
  (``ex.seed_mean``)."""
  return tuple(ex.seed_mean(values, interval=LEVEL)[:3])


def gaps(results: dict[str, np.ndarray], h: int = -1
         ) -> dict[str, tuple[float, ex.Estimate]]:
  """Measured minus mean-field ``lambda_max`` at width index ``h``:
  ``(g, Estimate)`` for the largest |gap| with ``g >= 1.5`` ("chaotic") and
  with ``1 < g < 1.5`` ("near_1", weak chaos), and at the smallest g
  ("ordered", where the gap is ``log rho(W)``)."""
  gs = results["weight_scales"]
  n_seeds = results["exponents"].shape[-1]
  lam, low, high = (results[k][h] - results["theory_at_grid"]
                    for k in ("lambda_max", "lambda_low", "lambda_high"))
  out = {}
  for name, sel in (("ordered", gs == gs.min()),
                    ("near_1", (gs > 1) & (gs < 1.5)),
                    ("chaotic", gs >= 1.5)):
    if sel.any() and (name != "ordered" or gs.min() < 1):
      i = np.flatnonzero(sel)[np.argmax(np.abs(lam[sel]))]
      out[name] = (float(gs[i]), ex.Estimate(
          float(lam[i]), float(low[i]), float(high[i]), n_seeds, LEVEL))
  return out


def plot(results: dict[str, np.ndarray]):
  """(a) spectra, (b) lambda_max vs g with theory, (c) the gap to mean
  field, (d) convergence."""
  fig, axes = plotting.new_figure(2, 2, width="full", height=5.0)
  ax_spec, ax_max, ax_gap, ax_conv = axes.ravel()
  gs = results["weight_scales"]
  hiddens = results["hiddens"]
  expo = results["exponents"][-1]                   # (n_g, k, seeds)
  n_big = int(hiddens[-1])
  k = expo.shape[1]
  n_seeds = expo.shape[-1]
  mean = expo.mean(-1)
  index = results["spectrum_index"]
  colors = [plotting.PALETTE[i % 7] for i in (0, 5, 2, 3, 1, 4, 6)]
  width_colors = [plotting.PALETTE[i] for i in (0, 1, 2, 4)]
  markers = ("s", "o", "^", "D")
  with plotting.paper_style():
    for c, i in enumerate(index):
      n_pos = int(np.sum(mean[i] > 0))
      ax_spec.plot(np.arange(1, k + 1), mean[i], color=colors[c % 7],
                   marker="o", ms=1.8, lw=0.9, label=f"g = {gs[i]:g}: {n_pos}")
    ax_spec.axhline(0.0, color="0.5", lw=0.5)
    ax_spec.set_xlabel(f"exponent index i (of n = {n_big})")
    ax_spec.set_ylabel("Lyapunov exponent $\\lambda_i$ (nats / step)")
    ax_spec.set_title(f"{k} leading exponents, n = {n_big}, mean of "
                      f"{n_seeds} seeds")
    ax_spec.legend(loc="lower center", bbox_to_anchor=(0.5, 0.15),
                   fontsize=6, ncol=2,
                   title="g: number of $\\lambda_i > 0$", title_fontsize=6)

    ax_max.plot(results["theory_g"], results["theory_max"], color="k",
                lw=1.0, label="mean field $\\frac{1}{2}\\log\\chi_1$ "
                              "($n\\to\\infty$)")
    ordered = results["theory_g"] < 1
    tg = results["theory_g"][ordered]
    for h, n in enumerate(hiddens):
      rho = results["log_rho"][h]
      ax_max.fill_between(tg, np.log(tg) + rho[0], np.log(tg) + rho[2],
                          color=width_colors[h], alpha=0.18, lw=0)
    ax_max.plot([], [], color="0.6", lw=4, alpha=0.5,
                label="$\\log g\\rho(W)$, finite n (5-95%)")
    _points(ax_max, results, np.zeros_like(gs), width_colors, markers)
    ax_max.axhline(0.0, color="0.5", lw=0.5)
    ax_max.axvline(1.0, color="0.5", lw=0.5, ls="--")
    ax_max.set_xlabel("weight scale g")
    ax_max.set_ylabel("largest exponent $\\lambda_1$ (nats / step)")
    ax_max.set_title("ordered (vanishing) to chaotic (exploding)")
    ax_max.legend(loc="lower right", fontsize=6)

    theory = results["theory_at_grid"]
    for h, n in enumerate(hiddens):
      rho = results["log_rho"][h]
      ax_gap.fill_between(gs[gs < 1], rho[0], rho[2], color=width_colors[h],
                          alpha=0.15, lw=0)
      ax_gap.plot(gs[gs < 1], np.full((gs < 1).sum(), rho[1]),
                  color=width_colors[h], lw=0.7, ls=":")
    _points(ax_gap, results, theory, width_colors, markers)
    ax_gap.axhline(0.0, color="k", lw=0.8)
    ax_gap.axvline(1.0, color="0.5", lw=0.5, ls="--")
    ax_gap.set_xscale("log")
    ax_gap.set_xticks([0.4, 0.6, 1, 1.5, 2, 3, 4],
                      ["0.4", "0.6", "1", "1.5", "2", "3", "4"])
    ax_gap.minorticks_off()
    ax_gap.set_xlabel("weight scale g")
    ax_gap.set_ylabel("$\\lambda_1$ - mean field (nats / step)")
    ax_gap.set_title(f"gap to mean field (seed mean, {LEVEL:.0%} CI)")
    ax_gap.plot([], [], color="0.6", lw=4, alpha=0.5,
                label="$\\log\\rho(W)$: 5-95%, median")
    found = gaps(results)
    lines = [f"n = {n_big}, gap at"]
    for name, label in (("ordered", "g = {g:g}"),
                        ("near_1", "g = {g:g} (largest, 1 < g < 1.5)"),
                        ("chaotic", "g = {g:g} (largest, g >= 1.5)")):
      if name in found:
        g, est = found[name]
        lines.append(label.format(g=g) + f":\n  {est}")
        if name == "ordered":
          lines[-1] += (f"\n  $\\log\\rho(W)$ median "
                        f"{results['log_rho'][-1, 1]:.3g}")
    ax_gap.text(0.98, 0.97, "\n".join(lines), transform=ax_gap.transAxes,
                ha="right", va="top", fontsize=5.5, linespacing=1.25)
    ax_gap.legend(loc="lower left", fontsize=6)

    steps = np.arange(1, int(results["length"]) + 1)
    for c, i in enumerate(index):
      ax_conv.plot(steps, results["running_max"][i], color=colors[c % 7],
                   lw=0.9)
      ax_conv.axhline(float(theory[i]), color=colors[c % 7], lw=0.6,
                      ls="--")
    ax_conv.set_xscale("log")
    ax_conv.set_xlabel("steps t")
    ax_conv.set_ylabel("running estimate of $\\lambda_1$")
    ax_conv.set_title(f"convergence, n = {n_big} (dashed: mean field)")
    plotting.label_panels(list(axes.ravel()))
  return fig


def _points(ax, results, minus, colors, markers):
  """Seed means and their intervals, one series per width, minus
  ``minus`` (n_g,)."""
  gs = results["weight_scales"]
  for h, n in enumerate(results["hiddens"]):
    v = results["lambda_max"][h] - minus
    err = np.stack([results["lambda_max"][h] - results["lambda_low"][h],
                    results["lambda_high"][h] - results["lambda_max"][h]])
    ax.errorbar(gs * (1 + 0.012 * (2 * h - 1)), v, yerr=err, ls="none",
                marker=markers[h % 4], ms=2.8, color=colors[h % 4],
                capsize=1.2, elinewidth=0.7,
                label=f"measured, n = {int(n)}")


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
