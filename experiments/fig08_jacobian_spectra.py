"""Jacobian spectra at criticality: dynamical isometry needs orthogonal weights.

The input-output Jacobian ``J = D_L W_L ... D_1 W_1`` of a deep MLP at the
edge of chaos (``chi_1 = 1``) has squared singular values of mean 1 at every
depth, but their spread grows with depth at a rate set by the weights and
the nonlinearity (Pennington, Schoenholz & Ganguli 2017, eqs. 14-17):
variance ``L (mu_2 / mu_1^2 - 1 - s_1)``, ``s_1 = -1`` for Gaussian and 0 for
orthogonal weights. Linear orthogonal nets are exact isometries (variance
0); ReLU nets are never isometric (variance >= L); tanh nets with
orthogonal weights and a small bias (so ``q*`` is small and ``phi'`` close
to 1) come close: dynamical isometry.

Each network is drawn once per seed and init at unit scale
(``ex.mlp.init``), then given each activation and the critical point
``weight_scale = sqrt(critical_sigma_w2)`` as data (the scales are leaves:
no redraw, no recompile per scale). It runs on one input drawn at the
fixed-point variance ``q*``; the Jacobian of ``ex.mlp.apply`` over its first
L layers is materialised with ``jax.jacfwd`` in float64 (one small compiled
function per activation and depth, a Python loop over nets) and the
singular values of all of them taken by one batched SVD. (The engine's ``ex.jacobian_singular_values`` gives the
same spectra without forming the product, by QR sweeps over the layers, but
the clustered orthogonal spectra need ~30 sweeps: about 50x this figure's
cost at width 160, for products that float64 holds easily at depth 64.)
Measured variances are compared with ``ex.theory.jacobian_spectrum_moments``.

Run: ``python experiments/fig08_jacobian_spectra.py [--quick]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"width": 48, "depths": [2, 8, 32], "seeds": 2, "tanh_sigma_b2": 1e-3,
         "key": 0}
FULL = {"width": 160, "depths": [2, 8, 32, 64], "seeds": 3,
        "tanh_sigma_b2": 1e-3, "key": 0}

ACTIVATIONS = ("linear", "relu", "tanh")
INITS = ("gaussian", "orthogonal")
CACHE_VERSION = 2


def compute(config: dict) -> dict[str, np.ndarray]:
  """Squared singular values of the Jacobian at each depth, and theory.

  Args:
    config: ``width`` (int), ``depths`` (increasing ints), ``seeds`` (int,
      networks per setting), ``tanh_sigma_b2`` (bias variance of the tanh
      nets; linear and ReLU nets have no bias), ``key`` (int).

  Returns:
    ``log10_sv2``: (n_act, n_init, n_depths, seeds, width) float64,
    ``log10 sigma_i^2`` of ``dh_L / dh_0``.
    ``variance``, ``mean``: (n_act, n_init, n_depths) the measured variance
    and mean of ``sigma^2`` (over singular values, then seeds).
    ``theory_variance``, ``theory_mean``: the same from free probability.
    ``sigma_w2``, ``sigma_b2``, ``q_star``: (n_act,) the critical point used.
    ``depths``: (n_depths,) int; ``width``: () int.
  """
  width = int(config["width"])
  depths = np.asarray(config["depths"], dtype=np.int64)
  seeds = int(config["seeds"])
  max_depth = int(depths[-1])
  shape = (len(ACTIVATIONS), len(INITS), len(depths))
  theory_var, theory_mean = np.zeros(shape), np.zeros(shape)
  sigma_w2, sigma_b2, q_stars = [], [], []
  with jax.enable_x64(True):
    for a, name in enumerate(ACTIVATIONS):
      sb2 = float(config["tanh_sigma_b2"]) if name == "tanh" else 0.0
      sw2 = float(ex.theory.critical_sigma_w2(name, sb2))
      q = float(ex.theory.q_star(name, sw2, sb2))
      # Linear and ReLU nets without bias are scale-free: any input variance.
      q = q if np.isfinite(q) and q > 0 and name == "tanh" else 1.0
      sigma_w2.append(sw2)
      sigma_b2.append(sb2)
      q_stars.append(q)
      for i, init in enumerate(INITS):
        for d, depth in enumerate(depths):
          theory_mean[a, i, d], theory_var[a, i, d] = (
              ex.theory.jacobian_spectrum_moments(
                  name, int(depth), init=init, sigma_w2=sw2, sigma_b2=sb2))
    # unsafe_rbg keys: the same statistics as threefry, drawn in a fraction
    # of the time (compilation dominates this figure).
    k_net, k_in = jax.random.split(
        jax.random.key(int(config["key"]), impl="unsafe_rbg"))
    nets = [[_init(k, width, max_depth, init=init, dtype=jnp.float64)
             for k in jax.random.split(k_net, seeds)] for init in INITS]
    inputs = jax.random.normal(k_in, (seeds, 1, width), jnp.float64)
    jacobians = []                        # (act, init, depth, seed) order
    for a, name in enumerate(ACTIVATIONS):
      for i in range(len(INITS)):
        for d, depth in enumerate(depths):
          for seed, unit in enumerate(nets[i]):
            # The scales are leaves: set them on the unit draws.
            first = unit.replace(
                activation=name, weight_scale=jnp.sqrt(sigma_w2[a]),
                bias_scale=jnp.sqrt(sigma_b2[a]),
                W0=unit.W0[:depth], b0=unit.b0[:depth])
            jacobians.append(_jacobian(first, np.sqrt(q_stars[a])
                                       * inputs[seed]))
    # One batched SVD: LAPACK's per-call threading overhead, not the
    # arithmetic, dominates 160 x 160 SVDs on a busy CPU.
    sv2 = np.asarray(_squared_singular_values(jnp.stack(jacobians)))
    sv2 = sv2.reshape(shape + (seeds, width))
  mean = sv2.mean(-1).mean(-1)
  variance = sv2.var(-1).mean(-1)
  return {
      "log10_sv2": np.log10(np.maximum(sv2, 1e-300)),
      "mean": mean,
      "variance": variance,
      "theory_mean": theory_mean,
      "theory_variance": theory_var,
      "sigma_w2": np.asarray(sigma_w2),
      "sigma_b2": np.asarray(sigma_b2),
      "q_star": np.asarray(q_stars),
      "depths": depths,
      "width": np.asarray(width),
  }


# One compiled draw per init (eager, the orthogonal draws dispatch op by op).
_init = jax.jit(ex.mlp.init, static_argnums=(1, 2),
                static_argnames=("init", "dtype"))


@jax.jit
def _jacobian(p, x):
  """``(width, width)`` Jacobian ``d apply(p, x) / dx`` at ``x`` of shape
  ``(1, width)``."""
  return jax.jacfwd(lambda h: ex.mlp.apply(p, h)[0])(x)[:, 0, :]


@jax.jit
def _squared_singular_values(matrices):
  """``(..., n)`` squared singular values of ``(..., n, n)`` matrices,
  largest first."""
  return jnp.linalg.svd(matrices, compute_uv=False) ** 2


def plot(results: dict[str, np.ndarray]):
  """Top two rows: densities of log10 sigma^2; bottom: variance vs depth."""
  from matplotlib.lines import Line2D

  from matplotlib.figure import Figure

  depths = results["depths"]
  logs = results["log10_sv2"]
  colors = [plotting.PALETTE[i] for i in (5, 0, 4, 1, 2, 3)][:len(depths)]
  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 6.6), layout="constrained")
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 1.1])
    hist_axes = []
    finite = logs[np.isfinite(logs) & (logs > -290)]
    lo = float(np.clip(np.floor(np.percentile(finite, 0.5)), -12, -3))
    hi = float(np.ceil(finite.max()) + 0.5)
    bins = np.linspace(lo, hi, int(4 * (hi - lo)) + 1)
    for i, init in enumerate(INITS):
      for a, name in enumerate(ACTIVATIONS):
        ax = fig.add_subplot(grid[i, a])
        hist_axes.append(ax)
        for d, depth in enumerate(depths):
          values = np.clip(logs[a, i, d].ravel(), lo, hi - 1e-9)
          ax.hist(values, bins=bins, density=True, histtype="step",
                  color=colors[d], lw=1.0, label=f"L = {depth}")
        ax.set_yscale("log")
        ax.set_ylim(3e-3, 2e2)
        ax.set_xlim(lo, hi)
        ax.axvline(0.0, color="0.6", lw=0.5, ls=":")
        deep = len(depths) - 1
        ax.text(0.02, 0.97,
                f"L = {depths[deep]}: Var[$\\sigma^2$]\n"
                f"measured {results['variance'][a, i, deep]:.3g}\n"
                f"theory {_fmt(results['theory_variance'][a, i, deep])}",
                transform=ax.transAxes, va="top", ha="left", fontsize=6.5,
                color=colors[deep])
        sb2 = results["sigma_b2"][a]
        bias = f", $\\sigma_b^2$ = {sb2:g}" if sb2 > 0 else ""
        ax.set_title(f"{name}, {init} "
                     f"($\\sigma_w^2$ = {results['sigma_w2'][a]:.3g}{bias})",
                     fontsize=7)
        if i == 1:
          ax.set_xlabel("$\\log_{10} \\sigma^2$ (squared singular value)")
        if (logs[a, i] < lo).any():
          ax.text(0.98, 0.97, f"values $\\leq 10^{{{lo:g}}}$\nin first bin",
                  transform=ax.transAxes, fontsize=5.5, color="0.4",
                  ha="right", va="top")
        if a == 0:
          ax.set_ylabel("density per unit $\\log_{10} \\sigma^2$")
    hist_axes[3].legend(loc="upper right", fontsize=6, handlelength=1.2,
                        title="depth", title_fontsize=6)

    var_axes = []
    floor = 1e-3
    for a, name in enumerate(ACTIVATIONS):
      ax = fig.add_subplot(grid[2, a])
      var_axes.append(ax)
      dense = np.geomspace(1, depths[-1], 100)
      for i, init in enumerate(INITS):
        color = plotting.PALETTE[i]
        measured = results["variance"][a, i]
        theory = results["theory_variance"][a, i]
        slope = theory[-1] / depths[-1]
        if slope > 1e-9:
          ax.plot(dense, slope * dense, color=color, ls="--", lw=0.9)
        else:
          ax.axhline(floor * 1.3, color=color, ls="--", lw=0.9)
          ax.text(depths[0], floor * 2.0, "orthogonal theory: 0 (exact "
                  "isometry);\nmeasured < $10^{-3}$, drawn at the floor",
                  color=color, fontsize=6)
        shown = np.maximum(measured, floor)
        ax.plot(depths, shown, ls="none", marker="o" if i == 0 else "s",
                color=color, markersize=4, markerfacecolor="none"
                if i == 1 else color)
      ax.set_xscale("log", base=2)
      ax.set_xticks(depths, [str(d) for d in depths])
      ax.minorticks_off()
      ax.set_yscale("log")
      ax.set_ylim(floor * 0.7, max(3.0 * results["variance"].max(), 10))
      ax.set_xlim(depths[0] / 1.5, depths[-1] * 1.5)
      ax.set_xlabel("depth L (layers)")
      ax.set_title(f"{name}: spread of the spectrum", fontsize=7)
      if a == 0:
        ax.set_ylabel("Var[$\\sigma^2$] of $J^T J$")
    handles = [
        Line2D([], [], color=plotting.PALETTE[0], marker="o", ls="none",
               label="Gaussian, measured"),
        Line2D([], [], color=plotting.PALETTE[1], marker="s", ls="none",
               markerfacecolor="none", label="orthogonal, measured"),
        Line2D([], [], color="0.3", ls="--",
               label="free probability (Pennington et al. 2017)"),
    ]
    var_axes[0].legend(handles=handles, loc="upper left", fontsize=6)
    fig.suptitle(f"Input-output Jacobian spectra at criticality, width "
                 f"{int(results['width'])}, mean of $\\sigma^2$ = "
                 f"{results['mean'].min():.2f} to {results['mean'].max():.2f}"
                 f" (theory 1); depth / width up to "
                 f"{depths[-1] / int(results['width']):.2f}", fontsize=8,
                 x=0.01, ha="left")
    plotting.label_panels(hist_axes + var_axes)
  return fig


def _fmt(x: float) -> str:
  return "0 (isometry)" if abs(x) < 1e-9 else f"{x:.3g}"


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
