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
The measured critical line is ``GradientMap.critical_scale("weight_scale",
interval=0.9)``: one crossing per bias scale, with its 90% percentile
bootstrap interval over seeds.

At ``sigma_b^2 = 0`` the crossing is tangential: ``log chi_1 = log
sigma_w^2`` below 1, but above 1 it grows only like ``(sigma_w^2 - 1)^2``
(below 3e-3 up to 1.15), because ``q*`` leaves 0 there. A finite net
starts at the input's ``q0 = 1``, above ``q*``, and its ``q`` decays over
a depth scale that diverges at that point: over 48 layers the rate stays
negative up to ``sigma_w^2 ~ 1.14``. The figure draws this finite-depth
mean field too (the q map iterated from ``q0 = 1`` over the net's layers,
``0.5 log chi_1(q_l)`` summed and fitted after L/4 layers exactly as the
measurement; ``finite_depth_rate``), and leaves ``sigma_b^2 = 0`` out of
the comparison with the infinite-depth line.

Run: ``python experiments/fig07_phase_diagram.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

CACHE_VERSION = 3

QUICK = {"width": 32, "depth": 16, "batch": 2, "n_w": 10, "n_b": 4,
         "sigma_w2": [0.5, 4.0], "sigma_b2": [0.0, 0.5], "seeds": 8,
         "key": 0}
FULL = {"width": 512, "depth": 48, "batch": 2, "n_w": 28, "n_b": 12,
        "sigma_w2": [0.5, 4.0], "sigma_b2": [0.0, 0.5], "seeds": 12,
        "key": 0}
LEVEL = 0.9


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
    ``critical_sw2``, ``critical_sw2_low``, ``critical_sw2_high``: (n_b,)
    measured sigma_w^2 where chi_1 crosses 1 (NaN if not in range) and its
    90% bootstrap interval over seeds. ``critical_sw2_theory``: (n_b,).
    ``critical_sw2_finite_depth``: (n_b,) where ``finite_depth_rate``
    crosses 0. ``line_sigma_b2``, ``line_sigma_w2``: a dense mean-field
    critical line; ``line_sigma_w2_finite_depth``: the finite-depth one.
    ``width``, ``depth``, ``seeds``: ().
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
  crit = m.critical_scale("weight_scale", interval=LEVEL)  # of sigma_w
  # The mean-field line rises steeply from sigma_b^2 = 0: sample densely there.
  line_b = np.unique(np.concatenate([
      [sb2[0]], np.geomspace(max(sb2[-1], 1e-3) * 1e-3, sb2[-1], 60)]))
  fine_w = np.linspace(*config["sigma_w2"], 141)
  finite = finite_depth_rate(fine_w[None, :], line_b[:, None], depth)
  return {
      "sigma_w2": sw2,
      "sigma_b2": sb2,
      "log_growth": m.log_growth,
      "rate": rate,
      "log_chi1": 2 * rate,
      "log_chi1_theory": np.log(ex.theory.chi1("tanh", sw2[None, :],
                                               sb2[:, None])),
      # sigma_w -> sigma_w^2 is monotone: the interval maps over.
      "critical_sw2": np.asarray(crit.value) ** 2,
      "critical_sw2_low": np.asarray(crit.low) ** 2,
      "critical_sw2_high": np.asarray(crit.high) ** 2,
      "critical_sw2_theory": np.asarray(
          ex.theory.critical_sigma_w2("tanh", sb2)),
      "critical_sw2_finite_depth": _first_crossings(
          finite_depth_rate(fine_w[None, :], sb2[:, None], depth), fine_w),
      "line_sigma_b2": line_b,
      "line_sigma_w2": np.asarray(ex.theory.critical_sigma_w2("tanh",
                                                              line_b)),
      "line_sigma_w2_finite_depth": _first_crossings(finite, fine_w),
      "width": np.array(width),
      "depth": np.array(depth),
      "seeds": np.array(int(config["seeds"])),
  }


def finite_depth_rate(sigma_w2, sigma_b2, depth: int, q0: float = 1.0, *,
                      nodes: int = 401):
  """Mean-field rate of a tanh MLP of finite depth, fitted like the map's.

  The pre-activation variance follows the q map from the input's ``q0``
  (Poole et al. 2016, eq. 3): ``q_1 = sigma_w2 q0 + sigma_b2``, ``q_(l+1) =
  sigma_w2 E[tanh(sqrt(q_l) z)^2] + sigma_b2``; a tangent's log norm gains
  ``0.5 log chi_1(q_l)``, ``chi_1(q) = sigma_w2 E[sech^4(sqrt(q) z)]``, at
  layer l. Returned: the least-squares slope of the summed log norm over
  layers ``depth // 4 + 1 .. depth`` (``GradientMap.rate``'s window).
  Expectations by a composite trapezoid rule on [-8, 8] (401 nodes; for
  these smooth integrands at q <= 10 the rate agrees with 4001 nodes to
  1e-12, ``tests/test_figures_0789.py``).

  Args:
    sigma_w2, sigma_b2: weight and bias variances, broadcasting float
      arrays (sigma_w2 > 0, sigma_b2 >= 0).
    depth: L >= 2 layers.
    q0: the input's mean square (the sweep draws inputs N(0, 1): 1).
    nodes: quadrature nodes.

  Returns:
    The broadcast shape, nats per layer.
  """
  sw2, sb2 = np.broadcast_arrays(np.asarray(sigma_w2, np.float64),
                                 np.asarray(sigma_b2, np.float64))
  if depth < 2 or np.any(sw2 <= 0) or np.any(sb2 < 0):
    raise ValueError("need depth >= 2, sigma_w2 > 0, sigma_b2 >= 0")
  z = np.linspace(-8.0, 8.0, nodes)
  weight = np.exp(-0.5 * z**2)
  weight /= weight.sum()
  h2 = np.full(sw2.shape, float(q0))
  log_norm, total = [], np.zeros(sw2.shape)
  for _ in range(depth):
    u = np.sqrt(sw2 * h2 + sb2)[..., None] * z
    total = total + 0.5 * np.log(sw2 * (np.cosh(u)**-4.0 @ weight))
    log_norm.append(total)
    h2 = np.tanh(u)**2 @ weight
  steps = np.arange(1, depth + 1)[depth // 4:]
  y = np.stack(log_norm[depth // 4:], axis=-1)
  x = steps - steps.mean()
  return (y - y.mean(-1, keepdims=True)) @ x / (x @ x)


def _first_crossings(rate, grid):
  """(n,) first upward zero crossing of each row of ``rate`` (n, m) along
  ``grid`` (m,), linearly interpolated; NaN where there is none."""
  out = np.full(rate.shape[0], np.nan)
  for i, r in enumerate(rate):
    up = np.flatnonzero((r[:-1] < 0) & (r[1:] >= 0))
    if up.size:
      j = up[0]
      out[i] = grid[j] + (grid[j + 1] - grid[j]) * -r[j] / (r[j + 1] - r[j])
  return out


# NaN where chi_1 (measured, resampled or finite-depth) never crosses 1
# inside the sigma_w^2 range.
ALLOW_NONFINITE = {"critical_sw2", "critical_sw2_low", "critical_sw2_high",
                   "critical_sw2_finite_depth", "line_sigma_w2_finite_depth"}


def plot(results: dict[str, np.ndarray]):
  """Measured and mean-field log chi_1 maps, and the two critical lines."""
  from matplotlib import colors

  fig, axes = plotting.new_figure(1, 3, width="full", height=2.7,
                                  gridspec_kw={"width_ratios": [1, 1, 1.1]})
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
      ax.contour(sw2, sb2, z, levels=[0.0], colors=[plotting.PALETTE[1]],
                 linewidths=1.1)
      ax.plot(line_b, fine_b, color="k", ls="--", lw=1.0)
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
    crit = results["critical_sw2"]
    low, high = results["critical_sw2_low"], results["critical_sw2_high"]
    ax.plot(line_b, fine_b, color="k", ls="--", lw=1.0,
            label="mean field (L $\\to\\infty$)")
    ax.plot(results["line_sigma_w2_finite_depth"], fine_b, color="0.45",
            ls=":", lw=1.0, label=f"mean field, {int(results['depth'])} "
                                  f"layers from $q_0$ = 1")
    color = plotting.PALETTE[1]
    for tangential in (False, True):
      sel = np.isfinite(crit) & ((sb2 == 0) == tangential)
      ax.errorbar(crit[sel], sb2[sel], xerr=np.stack(
          [crit[sel] - low[sel], high[sel] - crit[sel]]), ls="none",
          marker="o", ms=3.2, color=color, capsize=1.5, elinewidth=0.7,
          markerfacecolor="white" if tangential else color,
          label=("$\\sigma_b^2$ = 0: tangential crossing" if tangential
                 else f"measured, {LEVEL:.0%} CI ({int(results['seeds'])} "
                      "seeds)"))
    worst = _worst_gap(results)
    if worst is not None:
      b2, est, inside, total = worst
      ax.text(0.03, 0.72,
              f"$\\sigma_b^2 > 0$: mean field in\nthe CI at {inside} of "
              f"{total}; largest\n|diff| ($\\sigma_b^2$ = {b2:.2g}):\n"
              f"{est.value:.2g} [{est.low:.2g}, {est.high:.2g}]\n"
              f"({est.n_seeds} seeds)",
              transform=ax.transAxes, ha="left", va="top", fontsize=5.5)
    ax.set_title("critical line $\\sigma_w^2(\\sigma_b^2)$")
    ax.set_xlabel("$\\sigma_w^2$")
    ax.set_ylabel("$\\sigma_b^2$")
    ax.set_xlim(sw2[0], sw2[-1])
    # Room above the data for the legend.
    ax.set_ylim(sb2[0] - 0.02, sb2[0] + 1.55 * (sb2[-1] - sb2[0]))
    ax.legend(loc="upper left", fontsize=5.5, borderaxespad=0.1)
    plotting.label_panels(axes)
    fig.suptitle(
        f"tanh MLP, width {int(results['width'])}, depth "
        f"{int(results['depth'])}: per-layer gradient growth $\\chi_1$ "
        f"(JVP, rate after L/4 layers); on the maps, solid: $\\chi_1$ = 1 of "
        f"the map, dashed: mean-field $\\chi_1$ = 1", fontsize=7)
  return fig


def _worst_gap(results):
  """``(sigma_b^2, Estimate of |measured - mean field|, inside, total)``
  at the bias scale > 0 where the measured crossing is farthest from mean
  field, and at how many of them mean field lies in the interval; None
  if no crossing was measured."""
  crit, theory = results["critical_sw2"], results["critical_sw2_theory"]
  sel = np.isfinite(crit) & (results["sigma_b2"] > 0)
  if not sel.any():
    return None
  low, high = results["critical_sw2_low"], results["critical_sw2_high"]
  i = np.flatnonzero(sel)[np.argmax(np.abs(crit - theory)[sel])]
  diff = np.array([crit[i], low[i], high[i]]) - theory[i]
  lo, hi = sorted(np.abs(diff[1:])) if diff[1] * diff[2] > 0 else (
      0.0, np.abs(diff[1:]).max())
  inside = int(np.sum((low[sel] <= theory[sel]) & (theory[sel]
                                                   <= high[sel])))
  return (float(results["sigma_b2"][i]),
          ex.Estimate(float(abs(diff[0])), float(lo), float(hi),
                      int(results["seeds"]), LEVEL), inside, int(sel.sum()))


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
