"""MLP gradient maps and remedies: plain, batch norm, residual, orthogonal.

Growth ``log10 ||J_L ... J_1 v||`` of a random unit tangent of the whole
(batch, width) activation through L layers, measured forward (JVP) in log
space, over weight scale g (sigma_w, no bias) and depth, for tanh and ReLU
MLPs: plain Gaussian weights, batch norm before the nonlinearity, residual
``h + phi(g W h)``, orthogonal weights. On each map: the measured critical
scale g_c (growth rate crosses 0) and the mean-field edge of chaos
``sqrt(critical_sigma_w2(phi, 0))`` (1 for tanh, sqrt(2) for ReLU); in each
title the measured rate per layer. Batch norm makes the rate independent of
g and positive: gradients explode at every scale, at the rate Yang et al.
(2019) predict, ``0.5 log batchnorm_gradient_rate(phi, B)`` per layer,
printed next to the measured one. Residual nets never vanish (the skip path
keeps the Jacobian near I).

Each map is one ``ex.sweep`` of the built-in MLP (one call per activation
and variant: they are static settings), over weight scale and seeds; every
sweep has the same key, so all maps share their seeds' input batches and
probes.
The ReLU variants without batch norm are positively homogeneous (no bias):
their state is renormalised, so their growth runs past float range.

Run: ``python experiments/fig06_mlp_maps.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

ACTIVATIONS = ("tanh", "relu")
VARIANTS = ("plain", "batch norm", "residual", "orthogonal")
# variant -> the MLP's static settings.
_SETTINGS = {"plain": {}, "batch norm": {"batchnorm": True},
             "residual": {"residual": True},
             "orthogonal": {"init": "orthogonal"}}
CACHE_VERSION = 2

QUICK = {"width": 32, "depth": 32, "batch": 8, "n_scales": 10, "seeds": 1,
         "scale_range": [0.3, 2.5], "key": 0}
FULL = {"width": 64, "depth": 96, "batch": 8, "n_scales": 28, "seeds": 3,
        "scale_range": [0.3, 2.5], "key": 0}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Depth x scale growth maps of 2 activations x 4 variants.

  Args:
    config: ``width``, ``depth`` (L), ``batch`` (B), ``n_scales``, ``seeds``,
      ``scale_range`` ([lo, hi] of g), ``key``.

  Returns:
    ``log_growth``, ``log_state_norm``: (2, 4, n_scales, L, seeds), natural
    log, indexed ``[ACTIVATIONS, VARIANTS]``. ``overflow_step``: (2, 4,
    n_scales, seeds). ``weight_scales``: (n_scales,). ``steps``: (L,).
    ``rate``: (2, 4, n_scales) nats per layer. ``critical_scale``: (2, 4),
    NaN where the rate never crosses 0. ``mean_field``: (2,).
    ``batchnorm_rate``: (2,) predicted nats per layer. ``batch``: ().
  """
  width, depth, batch = (int(config[k]) for k in ("width", "depth", "batch"))
  gs = np.linspace(*config["scale_range"], int(config["n_scales"]))
  maps = [[ex.sweep("mlp", weight_scales=gs, length=depth,
                    seeds=int(config["seeds"]), key=int(config["key"]),
                    width=width, batch=batch, activation=act,
                    progress=False, **_SETTINGS[var])
           for var in VARIANTS] for act in ACTIVATIONS]
  arrays = {name: np.stack([np.stack([getattr(m, name) for m in row])
                            for row in maps])
            for name in ("log_growth", "log_state_norm", "overflow_step")}
  return {
      **arrays,
      "weight_scales": gs,
      "steps": np.arange(1, depth + 1),
      "rate": np.array([[m.rate() for m in row] for row in maps]),
      "critical_scale": np.array([[m.critical_scale() for m in row]
                                  for row in maps]),
      "mean_field": np.array([np.sqrt(ex.theory.critical_sigma_w2(a, 0.0))
                              for a in ACTIVATIONS]),
      "batchnorm_rate": np.array([
          0.5 * ex.theory.batchnorm_log_gradient_rate(a, batch)
          for a in ACTIVATIONS]),
      "batch": np.array(batch),
      "width": np.array(width),
  }


# critical_scale: NaN where the rate never crosses 0 in range (batch norm,
# residual). log_state_norm: a tanh state at g < 1 decays to exactly 0.
ALLOW_NONFINITE = {"critical_scale", "log_state_norm"}


def plot(results: dict[str, np.ndarray]):
  """2 x 4 maps (rows: tanh, ReLU; columns: the variants), one colour bar
  per row."""
  fig, axes = plotting.new_figure(2, 4, width="full", height=5.0,
                                  sharex=True, sharey=True)
  gs, steps = results["weight_scales"], results["steps"]
  with plotting.paper_style():
    for a, act in enumerate(ACTIVATIONS):
      z = results["log_growth"][a] / np.log(10)
      finite = np.abs(z[np.isfinite(z)])
      vmax = float(np.clip(np.percentile(finite, 98), 1, 30))
      for v, var in enumerate(VARIANTS):
        ax = axes[a, v]
        m = _as_map({k: results[k][a, v] for k in
                     ("log_growth", "log_state_norm", "overflow_step")},
                    gs, steps)
        image = plotting.draw_growth_map(
            ax, m, vmax=vmax, colorbar=False, legend=False,
            theory=None if var == "batch norm"
            else {"MF": results["mean_field"][a]})
        r = results["rate"][a, v]
        gc = results["critical_scale"][a, v]
        lines = [f"measured $g_c$ = {gc:.2f}" if np.isfinite(gc)
                 else "no $g_c$ in range",
                 f"mean field $g_c$ = {results['mean_field'][a]:.2f}"]
        if var == "batch norm":
          lines = [f"rate {np.nanmean(r):+.3f}/layer (all g)",
                   f"theory {results['batchnorm_rate'][a]:+.3f}"
                   f" (B = {int(results['batch'])})"]
        elif var == "residual":
          lines.insert(0, f"rate {np.nanmin(r):+.3f}..{np.nanmax(r):+.3f}")
        ax.text(0.03, 0.97, "\n".join(lines), transform=ax.transAxes,
                va="top", ha="left", fontsize=5.8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white",
                      "ec": "none", "alpha": 0.85})
        ax.set_title(f"{act}, {var}")
        ax.set_xlabel("weight scale $g$" if a == 1 else "")
        ax.set_ylabel("depth $L$ (layers)" if v == 0 else "")
      cb = fig.colorbar(image, ax=list(axes[a]), pad=0.01, aspect=25)
      cb.set_label("log$_{10}$ growth")
    plotting.label_panels(axes)
    fig.suptitle(
        f"MLPs, width {int(results['width'])}, batch "
        f"{int(results['batch'])}: log$_{{10}}\\|J_L\\cdots J_1 v\\|$ (JVP, "
        f"seed mean); solid: measured $g_c$, dashed: mean-field $\\chi_1$ = 1;"
        f" contour: growth = 1; rates in nats/layer", fontsize=7)
  return fig


def _as_map(arrays, gs, steps) -> ex.GradientMap:
  return ex.GradientMap(log_growth=arrays["log_growth"],
                        log_state_norm=arrays["log_state_norm"],
                        overflow_step=arrays["overflow_step"],
                        axes={"weight_scale": gs}, steps=steps,
                        config={"model": "mlp", "method": "jvp"})


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
