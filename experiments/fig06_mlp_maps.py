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

All eight maps come from one compiled program: the positively homogeneous
ReLU variants (plain, residual, orthogonal; state renormalised) in one
vmapped group, the others in a second; ``lax.switch`` picks the variant.

Run: ``python experiments/fig06_mlp_maps.py [--quick]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

ACTIVATIONS = ("tanh", "relu")
VARIANTS = ("plain", "batch norm", "residual", "orthogonal")
# (activation, variant) per program group; group 1 is homogeneous.
_GROUPS = ((("tanh", "plain"), ("tanh", "batch norm"), ("tanh", "residual"),
            ("tanh", "orthogonal"), ("relu", "batch norm")),
           (("relu", "plain"), ("relu", "residual"), ("relu", "orthogonal")))

QUICK = {"width": 32, "depth": 32, "batch": 8, "n_scales": 10, "seeds": 1,
         "scale_range": [0.3, 2.5], "key": 0, "fast_compile": True}
FULL = {"width": 64, "depth": 96, "batch": 8, "n_scales": 28, "seeds": 3,
        "scale_range": [0.3, 2.5], "key": 0, "fast_compile": False}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Depth x scale growth maps of 2 activations x 4 variants.

  Args:
    config: ``width``, ``depth`` (L), ``batch`` (B), ``n_scales``, ``seeds``,
      ``scale_range`` ([lo, hi] of g), ``key``, ``fast_compile``.

  Returns:
    ``log_growth``, ``log_state_norm``: (2, 4, n_scales, L, seeds), natural
    log, indexed ``[ACTIVATIONS, VARIANTS]``. ``overflow_step``: (2, 4,
    n_scales, seeds). ``weight_scales``: (n_scales,). ``steps``: (L,).
    ``rate``: (2, 4, n_scales) nats per layer. ``critical_scale``: (2, 4),
    NaN where the rate never crosses 0. ``mean_field``: (2,).
    ``batchnorm_rate``: (2,) predicted nats per layer. ``batch``: ().
  """
  width, depth, batch = (int(config[k]) for k in ("width", "depth", "batch"))
  seeds = int(config["seeds"])
  gs = np.linspace(*config["scale_range"], int(config["n_scales"]))
  run = _program(width, depth, batch, bool(config["fast_compile"]))
  keys = jax.random.split(jax.random.key(int(config["key"])), seeds)
  outs = jax.device_get(run(jnp.asarray(gs, jnp.float32), keys))
  shape = (len(ACTIVATIONS), len(VARIANTS))
  arrays = {}
  for name, parts in zip(("log_growth", "log_state_norm", "overflow_step"),
                         zip(*outs)):
    full = [None] * (shape[0] * shape[1])
    for group, part in zip(_GROUPS, parts):
      for j, (act, var) in enumerate(group):
        # part: (seeds, variants, scales, ...) -> (scales, ..., seeds)
        full[ACTIVATIONS.index(act) * shape[1] + VARIANTS.index(var)] = (
            np.moveaxis(np.asarray(part[:, j]), 0, -1))
    arrays[name] = np.stack(full).reshape(shape + full[0].shape)
  steps = np.arange(1, depth + 1)
  rate = np.zeros(shape + (len(gs),))
  critical = np.zeros(shape)
  for a in range(shape[0]):
    for v in range(shape[1]):
      m = _as_map({k: x[a, v] for k, x in arrays.items()}, gs, steps)
      rate[a, v] = m.rate()
      critical[a, v] = m.critical_scale()
  return {
      **arrays,
      "weight_scales": gs,
      "steps": steps,
      "rate": rate,
      "critical_scale": critical,
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
                        weight_scales=gs, steps=steps,
                        config={"model": "mlp", "method": "jvp"})


@functools.lru_cache(maxsize=4)
def _program(width: int, depth: int, batch: int, fast_compile: bool):
  """One jitted program over (group variant, scale) x seed keys."""

  def point(group, index, g, key):
    k_init, k_state, k_probe = jax.random.split(key, 3)
    p = ex.mlp.init(k_init, width, depth).replace(weight_scale=g)
    w_orth = ex.mlp.init(k_init, width, depth, init="orthogonal").W0
    is_orth = jnp.asarray([var == "orthogonal" for _, var in _GROUPS[group]])
    layers = (jnp.where(is_orth[index], w_orth, p.W0), p.b)
    branches = [
        functools.partial(ex.mlp.step, p.replace(
            activation=act, batchnorm=var == "batch norm",
            residual=var == "residual"))
        for act, var in _GROUPS[group]]

    def f(h, layer):
      return jax.lax.switch(index, branches, h, layer)

    h0 = jax.random.normal(k_state, (batch, width))
    out = ex.jvp_growth(f, h0, layers, key=k_probe, homogeneous=group == 1)
    return out.log_growth, out.log_state_norm, out.overflow_step

  def per_seed(gs, key):
    outs = []
    for group in range(len(_GROUPS)):
      over_scales = jax.vmap(functools.partial(point, group),
                             in_axes=(None, 0, None))
      over_variants = jax.vmap(over_scales, in_axes=(0, None, None))
      outs.append(over_variants(jnp.arange(len(_GROUPS[group])), gs, key))
    return tuple(outs)   # per group: (variants, scales, ...)

  def run(gs, keys):
    return jax.vmap(per_seed, in_axes=(None, 0))(gs, keys)

  options = {"xla_backend_optimization_level": 0} if fast_compile else None
  return jax.jit(run, compiler_options=options)


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
