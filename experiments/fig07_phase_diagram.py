"""Order-to-chaos phase diagram of a wide tanh MLP: measured chi_1, mean field.

For a tanh MLP with weights ``N(0, sigma_w^2 / n)`` and biases
``N(0, sigma_b^2)`` the per-layer growth of a random tangent's log norm,
``rate`` (least-squares slope over depth after a burn-in of L/4 layers,
seed mean, ``ex.GradientMap.rate``), measures ``chi_1 = exp(2 rate)``
(Poole et al. 2016; Schoenholz et al. 2017). (a) measured ``log chi_1`` over
(sigma_w^2, sigma_b^2), with the measured ``chi_1 = 1`` contour and the
mean-field critical line ``sigma_w^2 = critical_sigma_w2("tanh",
sigma_b^2)``; (b) the mean-field ``log chi_1`` (``ex.theory.chi1``) on the
same grid and colour scale; (c) the critical line, measured vs predicted.

The whole (sigma_b, sigma_w, seed) grid is one ``ex.sweep`` over the two
knobs ``bias_scale`` and ``weight_scale`` (one compiled program): biases and
weights are drawn at unit scale once per seed and scaled per grid point, so
every point of a seed shares its random matrices and the map is smooth.
The measured critical line is ``GradientMap.critical_scale("weight_scale")``,
one crossing per bias scale.

Run: ``python experiments/fig07_phase_diagram.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

CACHE_VERSION = 2

QUICK = {"width": 64, "depth": 24, "batch": 2, "n_w": 12, "n_b": 6,
         "sigma_w2": [0.5, 4.0], "sigma_b2": [0.0, 0.5], "seeds": 1,
         "key": 0}
FULL = {"width": 256, "depth": 48, "batch": 2, "n_w": 28, "n_b": 12,
        "sigma_w2": [0.5, 4.0], "sigma_b2": [0.0, 0.5], "seeds": 2,
        "key": 0}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Measured and mean-field chi_1 on a (sigma_b^2, sigma_w^2) grid.

  Args:
    config: ``width``, ``depth``, ``batch``, ``n_w``, ``n_b``, ``sigma_w2``
      and ``sigma_b2`` ([lo, hi], linear grids), ``seeds``, ``key``,
      ``fast_compile``.

  Returns:
    ``sigma_w2``: (n_w,). ``sigma_b2``: (n_b,). ``log_growth``: (n_b, n_w,
    depth, seeds). ``rate``: (n_b, n_w) nats/layer. ``log_chi1``: (n_b, n_w)
    measured, ``2 rate``. ``log_chi1_theory``: (n_b, n_w) mean field.
    ``critical_sw2``: (n_b,) measured sigma_w^2 where chi_1 crosses 1 (NaN
    if not in range). ``critical_sw2_theory``: (n_b,). ``line_sigma_b2``,
    ``line_sigma_w2``: a dense mean-field critical line. ``width``, ``depth``:
    ().
  """
  width, depth, batch = (int(config[k]) for k in ("width", "depth", "batch"))
  sw2 = np.linspace(*config["sigma_w2"], int(config["n_w"]))
  sb2 = np.linspace(*config["sigma_b2"], int(config["n_b"]))
  m = ex.sweep("mlp", grid={"bias_scale": np.sqrt(sb2),
                            "weight_scale": np.sqrt(sw2)},
               length=depth, seeds=int(config["seeds"]),
               key=int(config["key"]), width=width, batch=batch,
               activation="tanh", progress=False)
  rate = m.rate()                                          # (n_b, n_w)
  # The mean-field line rises steeply from sigma_b^2 = 0: sample densely there.
  line_b = np.unique(np.concatenate([
      [sb2[0]], np.geomspace(max(sb2[-1], 1e-3) * 1e-3, sb2[-1], 60)]))
  return {
      "sigma_w2": sw2,
      "sigma_b2": sb2,
      "log_growth": m.log_growth,
      "rate": rate,
      "log_chi1": 2 * rate,
      "log_chi1_theory": np.log(ex.theory.chi1("tanh", sw2[None, :],
                                               sb2[:, None])),
      "critical_sw2": m.critical_scale("weight_scale") ** 2,
      "critical_sw2_theory": np.asarray(
          ex.theory.critical_sigma_w2("tanh", sb2)),
      "line_sigma_b2": line_b,
      "line_sigma_w2": np.asarray(ex.theory.critical_sigma_w2("tanh",
                                                              line_b)),
      "width": np.array(width),
      "depth": np.array(depth),
  }


# NaN where the measured chi_1 never crosses 1 inside the sigma_w^2 range.
ALLOW_NONFINITE = {"critical_sw2"}


def plot(results: dict[str, np.ndarray]):
  """Measured and mean-field log chi_1 maps, and the two critical lines."""
  from matplotlib import colors

  fig, axes = plotting.new_figure(1, 3, width="full", height=2.7,
                                  gridspec_kw={"width_ratios": [1, 1, 0.95]})
  sw2, sb2 = results["sigma_w2"], results["sigma_b2"]
  fine_b, line_b = results["line_sigma_b2"], results["line_sigma_w2"]
  measured = results["log_chi1"]
  vmax = float(np.nanmax(np.abs(np.concatenate(
      [measured.ravel(), results["log_chi1_theory"].ravel()]))))
  norm = colors.TwoSlopeNorm(0.0, -vmax, vmax)
  with plotting.paper_style():
    for ax, z, title in ((axes[0], measured, "measured"),
                         (axes[1], results["log_chi1_theory"],
                          "mean field")):
      image = ax.pcolormesh(sw2, sb2, z, shading="nearest", cmap="RdBu_r",
                            norm=norm, rasterized=True)
      ax.contour(sw2, sb2, z, levels=[0.0], colors="k", linewidths=0.9)
      ax.plot(line_b, fine_b, color="w", ls="--", lw=1.0)
      ax.set_title(f"{title} log $\\chi_1$")
      ax.set_xlabel("$\\sigma_w^2$")
      ax.set_ylabel("$\\sigma_b^2$")
      ax.text(0.04, 0.94, "ordered\n(vanishing)", transform=ax.transAxes,
              fontsize=6.5, va="top", color="k")
      ax.text(0.96, 0.06, "chaotic\n(exploding)", transform=ax.transAxes,
              fontsize=6.5, ha="right", color="k")
    cb = fig.colorbar(image, ax=list(axes[:2]), pad=0.01, aspect=25)
    cb.set_label("log $\\chi_1$ = 2 x rate (nats / layer)")

    ax = axes[2]
    i0, i1 = 0, len(sb2) - 1
    crit, crit_mf = results["critical_sw2"], results["critical_sw2_theory"]
    ax.plot(line_b, fine_b, color="k", ls="--", lw=1.0,
            label=f"mean field: {crit_mf[i0]:.2f} .. {crit_mf[i1]:.2f}")
    ok = np.isfinite(crit)
    err = np.abs(crit[ok] - crit_mf[ok])
    ax.plot(crit[ok], sb2[ok], "o", color=plotting.PALETTE[1], ms=3.5,
            label=f"measured: {crit[i0]:.2f} .. {crit[i1]:.2f}\n"
                  f"(max |diff| {err.max() if err.size else np.nan:.2f})")
    ax.set_title("critical line $\\sigma_w^2(\\sigma_b^2)$")
    ax.set_xlabel("$\\sigma_w^2$")
    ax.set_ylabel("$\\sigma_b^2$")
    ax.set_xlim(sw2[0], sw2[-1])
    # Room above the data for the legend.
    ax.set_ylim(sb2[0] - 0.02, sb2[0] + 1.55 * (sb2[-1] - sb2[0]))
    ax.legend(loc="upper left", fontsize=5.5, borderaxespad=0.1,
              title=f"$\\sigma_w^2$ at $\\sigma_b^2$ = {sb2[i0]:g} .. "
                    f"{sb2[i1]:g}", title_fontsize=6)
    for a in axes[:2]:
      a.plot([], [], color="k", lw=0.9, label="measured $\\chi_1$ = 1")
      a.plot([], [], color="w", ls="--", lw=1.0,
             label="mean field $\\chi_1$ = 1")
    axes[0].legend(loc="upper right", fontsize=5.5, frameon=True,
                   facecolor="0.85", framealpha=0.9)
    plotting.label_panels(axes)
    fig.suptitle(
        f"tanh MLP, width {int(results['width'])}, depth "
        f"{int(results['depth'])}: per-layer gradient growth $\\chi_1$ "
        f"(JVP, rate after L/4 layers)", fontsize=7)
  return fig


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
