"""RNN gradient maps: where linear, tanh, ReLU, sigmoid RNNs vanish or explode.

For ``h_t = phi(g W0 h_(t-1))`` (no bias, no input, ``W0`` entries
``N(0, 1/n)``) the growth ``log10 ||J_T ... J_1 v||`` of a random unit
tangent, measured forward (JVP) in log space, is mapped over weight scale g
and sequence length T. On each map: the measured critical scale (where the
seed-mean growth rate per step crosses 0, with its 90% bootstrap interval
over seeds), the mean-field edge of chaos (``chi_1 = 1``: ``g =
sqrt(critical_sigma_w2(phi, 0))``, 1 for linear and tanh, sqrt(2) for
ReLU, 10.15 for sigmoid), the tied-weight edge of each seed's own ``W0``,
and Pascanu et al.'s sufficient condition for vanishing, ``sigma_max(g W0)
< 1 / gamma``, placed with the measured ``sigma_max(W0)`` (about 2).

Tied weights: a recurrent net applies one ``W0`` at every step, so its
ordered phase is not mean field's. The state settles on a fixed point and
the rate is ``log rho(J*)`` there, exactly (``ex.theory.tied_ordered_rate``):
``log(g rho(W0))`` for linear and tanh (h* = 0), so their ordered phase
ends at ``1 / rho(W0)`` per seed (``rho(W0)`` ~ 1.05 at n = 128); for
sigmoid the fixed point is not 0 and turns unstable at a scale that varies
from seed to seed (``ex.theory.tied_critical_scale``). The seeds' ``W0``
come from ``ex.theory.sweep_params``, the draws the sweeps used. ReLU's
state keeps a direction rather than a fixed point: mean field only.

One ``ex.sweep`` per activation (the activation is a setting, so each is
its own compiled program); every sweep draws the same seeds, so all four
maps share each seed's ``W0``. The built-in RNN declares linear and ReLU
homogeneous (no bias), so their state is renormalised and never overflows.

Run: ``python experiments/fig04_rnn_maps.py [--quick]``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

import exploding as ex
from exploding import plotting
from exploding.plotting import PALETTE

ACTIVATIONS = ("linear", "tanh", "relu", "sigmoid")
# (lo, hi, log-spaced?) weight scales per activation, around each transition.
SCALE_RANGES = {"linear": (0.3, 1.7, False), "tanh": (0.3, 2.3, False),
                "relu": (0.3, 2.6, False), "sigmoid": (1.0, 20.0, True)}

QUICK = {"hidden": 32, "length": 64, "n_scales": 12, "seeds": 4, "key": 0}
FULL = {"hidden": 128, "length": 256, "n_scales": 40, "seeds": 16, "key": 0}
CACHE_VERSION = 3   # bump when compute() changes (3: intervals, tied W0)

# A tanh state at g < 1 decays to exactly 0 in float32: log ||h_t|| = -inf
# there (the growth, measured on the tangent, stays finite). A seed whose
# rate never crosses 0 on the grid has critical scale NaN.
ALLOW_NONFINITE = {"log_state_norm", "critical_scale_seeds", "tied_seeds",
                   "tied", "tied_low", "tied_high", "tied_rate_seeds"}
LEVEL = 0.9   # bootstrap intervals over seeds


def compute(config: dict) -> dict[str, np.ndarray]:
  """Growth maps of the four RNNs, critical scales and theory lines.

  Args:
    config: ``hidden`` (n), ``length`` (T), ``n_scales``, ``seeds``, ``key``
      (int, the sweeps' key).

  Returns:
    ``log_growth``, ``log_state_norm``: (4, n_scales, T, seeds) natural log,
    activations in ``ACTIVATIONS`` order. ``overflow_step``: (4, n_scales,
    seeds). ``weight_scales``: (4, n_scales). ``steps``: (T,).
    ``hidden``: () n. ``rate``, ``rate_low``, ``rate_high``: (4,
    n_scales) seed-mean nats/step and its ``LEVEL`` bootstrap interval.
    ``tied_rate_seeds``: (4, seeds, n_scales) ``tied_ordered_rate`` of each
    seed's ``W0`` (NaN for ReLU).
    ``critical_scale``, ``critical_low``, ``critical_high``: (4,) the
    seed-mean rate's crossing and its ``LEVEL`` bootstrap interval;
    ``critical_n``: (4,) seeds. ``critical_scale_seeds``: (4, seeds) each
    seed alone. ``mean_field``: (4,) ``sqrt(critical_sigma_w2(phi, 0))``.
    ``rho_w0``, ``sigma_max_w0``: (seeds,) spectral radius and norm of each
    seed's ``W0``. ``tied_seeds``: (4, seeds) where each seed's tied rate
    crosses 0 (NaN for ReLU); ``tied``, ``tied_low``, ``tied_high``: (4,)
    their seed mean and bootstrap interval. ``gamma``: (4,) ``sup |phi'|``.
    ``pascanu``: (4,) ``pascanu_vanishing_bound / mean sigma_max(W0)``.
  """
  n, T, seeds = (int(config[k]) for k in ("hidden", "length", "seeds"))
  key = int(config["key"])
  grids = [_scale_grid(a, int(config["n_scales"])) for a in ACTIVATIONS]
  # Theory first: numpy's threaded eigensolves run several times slower
  # while XLA's threads still spin after a sweep.
  w0 = np.asarray(ex.theory.sweep_params(ex.rnn.model(n), seeds,
                                         key=key).W0, np.float64)
  tied_rate, tied = _tied(w0, grids)
  maps = [ex.sweep("rnn", activation=a, hidden=n, length=T, seeds=seeds,
                   key=key, progress=False, weight_scales=g)
          for a, g in zip(ACTIVATIONS, grids)]
  crit = [m.critical_scale(interval=LEVEL) for m in maps]
  rates = [m.rate(interval=LEVEL) for m in maps]
  tied_mean = np.array([_mean_interval(t) for t in tied])     # (4, 3)
  smax = np.linalg.norm(w0, ord=2, axis=(1, 2))
  bound = np.array([ex.theory.pascanu_vanishing_bound(a) for a in ACTIVATIONS])
  stack = lambda f: np.stack([f(m) for m in maps])
  return {
      "log_growth": stack(lambda m: m.log_growth),
      "log_state_norm": stack(lambda m: m.log_state_norm),
      "overflow_step": stack(lambda m: m.overflow_step),
      "weight_scales": stack(lambda m: m.weight_scales),
      "steps": maps[0].steps,
      "hidden": np.array(n),
      "rate": np.array([r.value for r in rates]),
      "rate_low": np.array([r.low for r in rates]),
      "rate_high": np.array([r.high for r in rates]),
      "tied_rate_seeds": tied_rate,
      "critical_scale": np.array([c.value for c in crit]),
      "critical_low": np.array([c.low for c in crit]),
      "critical_high": np.array([c.high for c in crit]),
      "critical_n": np.array([c.n_seeds for c in crit]),
      "critical_scale_seeds": stack(_critical_per_seed),
      "mean_field": np.array([np.sqrt(ex.theory.critical_sigma_w2(a, 0.0))
                              for a in ACTIVATIONS]),
      "rho_w0": np.asarray(ex.theory.spectral_radius(w0)),
      "tied_seeds": tied,
      "tied": tied_mean[:, 0],
      "tied_low": tied_mean[:, 1],
      "tied_high": tied_mean[:, 2],
      "gamma": np.array([ex.activation(a).gamma for a in ACTIVATIONS]),
      "sigma_max_w0": smax,
      "pascanu": bound / smax.mean(),
  }


def plot(results: dict[str, np.ndarray]):
  """Per activation, a map (each seed's measured, black, and tied-``W0``,
  red, critical scale as ticks along its foot) over its rate against g:
  measured (seed mean, bootstrap band), mean field, each seed's tied rate."""
  fig, axes = plotting.new_figure(4, 2, width="full", height=8.2,
                                  height_ratios=(2.2, 1, 2.2, 1))
  with plotting.paper_style():
    for i, name in enumerate(ACTIVATIONS):
      ax, ax_r = axes[2 * (i // 2), i % 2], axes[2 * (i // 2) + 1, i % 2]
      g = results["weight_scales"][i]
      image = plotting.draw_growth_map(ax, _as_map(results, i), vmax=30,
                                       critical=False, legend=False,
                                       colorbar=False)
      lines = _theory_lines(results, i)
      for x, style, label in lines:
        if np.isfinite(x):
          ax.axvline(x, lw=0.9, label=label, **style)
          ax_r.axvline(x, lw=0.9, **style)
      if not np.any(np.isfinite(results["tied_seeds"][i])):
        ax.plot([], [], ls="none", label="tied $W_0$: no fixed point (ReLU)")
      for per_seed, y, color in ((results["critical_scale_seeds"][i], 0.035,
                                  "k"),
                                 (results["tied_seeds"][i], 0.09, TIED)):
        ax.plot(per_seed, np.full(per_seed.shape, y), ls="none", marker="|",
                ms=5, mew=0.9, color=color,
                transform=ax.get_xaxis_transform())
      gamma = results["gamma"][i]
      ax.set_title(f"{name} RNN ($\\gamma$ = sup|$\\phi'$| = {gamma:g})",
                   pad=4)
      ax.set_xlabel("")
      ax.legend(loc="upper left", fontsize=5.5, frameon=True,
                framealpha=0.85, handlelength=2.2)
      # Rates: measured band, mean field, each seed's tied-W0 rate (where
      # its fixed point is stable; linear is a power iteration: always).
      ax_r.axhline(0.0, color="0.6", lw=0.5)
      ax_r.fill_between(g, results["rate_low"][i], results["rate_high"][i],
                        color=PALETTE[0], alpha=0.3, lw=0)
      ax_r.plot(g, results["rate"][i], color=PALETTE[0], lw=1.2,
                label="measured (seed mean)")
      fine = np.geomspace(g[0], g[-1], 200)
      ax_r.plot(fine, ex.theory.rnn_lyapunov_max(name, fine), color="k",
                ls="--", lw=0.9, label="mean field $\\lambda_{max}$")
      tied = results["tied_rate_seeds"][i]
      if np.any(np.isfinite(tied)):
        ordered = tied if name == "linear" else np.where(tied < 0, tied,
                                                         np.nan)
        for row in ordered:
          at = np.isfinite(row)
          ax_r.plot(g[at], row[at], color=TIED, lw=0.4, alpha=0.6)
        ax_r.plot([], [], color=TIED, lw=0.8,
                  label="tied $W_0$: $\\log\\rho(J^*)$, each seed")
      ax_r.set_ylim(-0.45, 0.45)
      ax_r.set_xlabel("weight scale $g$ ($\\sigma_w$)")
      ax_r.set_ylabel("rate (nats/step)")
      ax_r.legend(loc="upper left", fontsize=5.5, frameon=True,
                  framealpha=0.85, handlelength=2.0)
      for a in (ax, ax_r):
        a.set_xlim(g[0], g[-1])
        if SCALE_RANGES[name][2]:
          a.set_xscale("log")
          a.set_xticks([1, 2, 5, 10, 20], ["1", "2", "5", "10", "20"])
          a.set_xticks([], minor=True)
    cb = fig.colorbar(image, ax=axes.ravel().tolist(), pad=0.01, aspect=40,
                      shrink=0.6)
    cb.set_label("log$_{10}$ growth (maps)")
    plotting.label_panels(axes)
    n = results["log_growth"].shape[-1]
    fig.suptitle(
        f"{int(results['hidden'])}-unit RNNs, {n} seeds: log$_{{10}}$ JVP "
        f"growth $\\|J_T\\cdots J_1 v\\|$ (seed mean; contour: growth = 1)"
        f" and its rate per step; intervals: {LEVEL:.0%} bootstrap over seeds;"
        f"\nticks along the foot of each map: each seed's measured (black) "
        f"and tied-$W_0$ (red) critical scale", fontsize=7)
  return fig


def _theory_lines(results, i: int) -> list[tuple[float, dict, str]]:
  """``(g, line style, legend label)`` of the vertical lines of panel i."""
  name = ACTIVATIONS[i]
  lines = [(results["critical_scale"][i], {"color": "k", "ls": "-"},
            "measured $g_c$ = " + _fmt(
                results["critical_scale"][i], results["critical_low"][i],
                results["critical_high"][i], results["critical_n"][i])),
           (results["mean_field"][i], {"color": "k", "ls": "--"},
            f"mean field $\\chi_1 = 1$: {results['mean_field'][i]:.2f}")]
  seeds = results["tied_seeds"][i]
  if np.any(np.isfinite(seeds)):
    what = ("$1/\\rho(W_0)$" if name in ("linear", "tanh")
            else "fixed point unstable")
    lines.append((results["tied"][i], {"color": TIED, "ls": "-."},
                  f"tied $W_0$, {what}: " + _fmt(
                      results["tied"][i], results["tied_low"][i],
                      results["tied_high"][i], np.isfinite(seeds).sum())))
  lines.append((results["pascanu"][i], {"color": "k", "ls": ":"},
                "Pascanu $g\\,\\sigma_{max}(W_0) = 1/\\gamma$: "
                f"{results['pascanu'][i]:.2f}"))
  return lines


def _scale_grid(name: str, n_scales: int) -> np.ndarray:
  lo, hi, log = SCALE_RANGES[name]
  return np.geomspace(lo, hi, n_scales) if log else np.linspace(lo, hi,
                                                                n_scales)


TIED = "#b2182b"


def _fmt(value, low, high, n) -> str:
  """``"v [lo, hi] (n seeds)"``."""
  return f"{value:.3g} [{low:.3g}, {high:.3g}] ({int(n)} seeds)"


def _tied(w0: np.ndarray, grids) -> tuple[np.ndarray, np.ndarray]:
  """Each seed's tied-``W0`` ordered rate on each activation's grid, up to
  where its fixed point turns unstable (the net leaves it there; linear, a
  power iteration, never does), and where it crosses 0: ``1/rho(W0)`` for
  linear and tanh, interpolated between grid points for sigmoid (as the
  measured g_c is). Returns ``(4, seeds, n_scales)`` and ``(4, seeds)``;
  NaN for ReLU (its state keeps a direction, not a fixed point)."""
  seeds = w0.shape[0]
  rate = np.full((4, seeds, len(grids[0])), np.nan)
  crossing = np.full((4, seeds), np.nan)
  for i, (a, g) in enumerate(zip(ACTIVATIONS, grids)):
    if a in ("linear", "tanh"):
      rate[i] = ex.theory.tied_ordered_rate(a, g, w0)
      crossing[i] = ex.theory.tied_critical_scale(a, w0)
    elif a == "sigmoid":
      rate[i] = ex.theory.tied_ordered_rate(a, g, w0, stop=True)
      crossing[i] = [_first_crossing(g, r) for r in rate[i]]
  return rate, crossing


def _first_crossing(g: np.ndarray, rate: np.ndarray) -> float:
  """First g where ``rate`` (NaN past its end) reaches 0 from below."""
  up = np.flatnonzero((rate[:-1] < 0) & (rate[1:] >= 0))
  if up.size == 0:
    return math.nan
  j = up[0]
  return float(np.interp(0.0, rate[j:j + 2], g[j:j + 2]))


def _mean_interval(values: np.ndarray, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
  """Mean of the finite ``values`` and its ``LEVEL`` percentile bootstrap
  interval (seeds resampled with replacement; numpy seed ``seed``)."""
  v = values[np.isfinite(values)]
  if v.size == 0:
    return math.nan, math.nan, math.nan
  boot = v[np.random.default_rng(seed).integers(0, v.size,
                                                (resamples, v.size))]
  low, high = np.percentile(boot.mean(axis=1),
                            [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
  return float(v.mean()), float(low), float(high)


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
