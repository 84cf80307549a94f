"""MLP gradient maps and remedies: plain, batch norm, residual, orthogonal.

Growth ``log10 ||J_L ... J_1 v||`` of a random unit tangent through L
layers, measured forward (JVP) in log space, over weight scale g (sigma_w,
no bias) and depth, for tanh and ReLU MLPs: plain Gaussian weights, batch
norm before the nonlinearity, residual ``h + phi(g W h)``, orthogonal
weights. Every number carries its 90% bootstrap interval over seeds.

Plain and orthogonal: one input (batch 1), the measured critical scale g_c
(the seed-mean growth rate crosses 0) against mean field's edge of chaos
``sqrt(critical_sigma_w2(phi, 0))`` (1 for tanh, sqrt(2) for ReLU) and the
finite-width edge for one input, ``quenched_critical_sigma_w2(phi, width,
depth=L)``: each layer multiplies the squared gradient by an independent
factor X, so one input's gradient grows at ``E log X``, O(1/width) below
mean field's ``log E X`` (ReLU at width 64: 1.443 Gaussian, 1.432
orthogonal). A batch's summed tangent averages its columns and sits
between the two.

Batch norm (batch 8) makes the rate independent of g and positive:
gradients explode at every scale, at the rate Yang et al. (2019) predict,
``0.5 log batchnorm_gradient_rate(phi, B)`` per layer.

Residual (one input): there is no chi_1 = 1 transition (the skip path
keeps the Jacobian near I, gradients never vanish), so no critical line.
ReLU's nonzero mean builds a coherent direction in the stream that the
gradient follows: it grows at 0.39 / 0.86 nats per layer at g = 1 / 2.5,
which ``residual_log_gradient(..., width=n)`` predicts (mean field, without
the cross term: 0.20 / 0.71). tanh grows subexponentially, as ``sqrt(L)``:
its per-layer rate falls as the stream's variance grows. Dashed contours:
the theory's growth at the levels of the solid measured ones.

Each map is one ``ex.sweep`` of the built-in MLP (one call per activation
and variant: they are static settings), over weight scale and seeds; every
sweep has the same key. The ReLU variants without batch norm are
positively homogeneous (no bias): their state is renormalised, so their
growth runs past float range.

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
CACHE_VERSION = 3   # 3: one input but for batch norm; intervals; theory
LEVEL = 0.9   # bootstrap intervals over seeds
# log10 growth levels of the residual panels' measured and theory contours.
RESIDUAL_LEVELS = {"tanh": (1.0, 2.0, 3.0), "relu": (5.0, 15.0, 25.0)}

QUICK = {"width": 32, "depth": 32, "batch_norm_batch": 8, "n_scales": 12,
         "seeds": 2, "bn_seeds": 2, "scale_range": [0.3, 2.5], "key": 0}
FULL = {"width": 64, "depth": 96, "batch_norm_batch": 8, "n_scales": 45,
        "seeds": 32, "bn_seeds": 8, "scale_range": [0.3, 2.5], "key": 0}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Depth x scale growth maps of 2 activations x 4 variants, and theory.

  Args:
    config: ``width``, ``depth`` (L), ``batch_norm_batch`` (B, batch norm's
      batch; the other variants have one input), ``n_scales``, ``seeds``,
      ``bn_seeds`` (batch norm's), ``scale_range`` ([lo, hi] of g), ``key``.

  Returns:
    ``log_growth``, ``log_state_norm``: (2, 4, n_scales, L, seeds), natural
    log, indexed ``[ACTIVATIONS, VARIANTS]`` (batch norm's extra seeds
    beyond ``bn_seeds`` NaN). ``overflow_step``: (2, 4, n_scales, seeds).
    ``weight_scales``: (n_scales,). ``steps``: (L,). ``rate``,
    ``rate_low``, ``rate_high``: (2, 4, n_scales) nats per layer, seed
    mean and ``LEVEL`` bootstrap interval. ``critical_scale`` and
    ``_low``, ``_high``: (2, 4), NaN where the rate never crosses 0;
    ``n_seeds``: (2, 4). ``mean_field``: (2,). ``quenched``: (2, 2) the
    finite-width one-input edge, ``[ACTIVATIONS, (gaussian, orthogonal)]``.
    ``batchnorm_rate``: (2,) predicted nats per layer; ``batchnorm_measured``
    (2, 3): value, low, high of the rate averaged over g.
    ``residual_theory``, ``residual_mean_field``: (2, n_scales, L) predicted
    natural-log growth of the norm with and without the cross term.
    ``batch``, ``width``: ().
  """
  width, depth = int(config["width"]), int(config["depth"])
  seeds, bn_seeds = int(config["seeds"]), int(config["bn_seeds"])
  gs = np.linspace(*config["scale_range"], int(config["n_scales"]))
  bn_batch = int(config["batch_norm_batch"])

  def run(act, var):
    bn = var == "batch norm"
    return ex.sweep("mlp", weight_scales=gs, length=depth,
                    seeds=bn_seeds if bn else seeds, key=int(config["key"]),
                    width=width, batch=bn_batch if bn else 1, activation=act,
                    progress=False, **_SETTINGS[var])

  maps = [[run(act, var) for var in VARIANTS] for act in ACTIVATIONS]
  pad = lambda a: np.concatenate([a, np.full(a.shape[:-1] + (
      seeds - a.shape[-1],), np.nan)], axis=-1) if a.shape[-1] < seeds else a
  arrays = {name: np.stack([np.stack([pad(np.asarray(
      getattr(m, name), np.float64)) for m in row]) for row in maps])
            for name in ("log_growth", "log_state_norm", "overflow_step")}
  rates = [[m.rate(interval=LEVEL) for m in row] for row in maps]
  crit = [[m.critical_scale(interval=LEVEL) for m in row] for row in maps]
  field = lambda f: np.array([[f(c) for c in row] for row in crit])
  bn_all_g = [_mean_over_g(row[1]).rate(interval=LEVEL) for row in maps]
  residual = lambda w: np.stack([0.5 * np.stack([
      ex.theory.residual_log_gradient(a, g * g, depth, width=w,
                                      cumulative=True) for g in gs])
      for a in ACTIVATIONS])
  return {
      **arrays,
      "weight_scales": gs,
      "steps": np.arange(1, depth + 1),
      "rate": np.array([[r.value for r in row] for row in rates]),
      "rate_low": np.array([[r.low for r in row] for row in rates]),
      "rate_high": np.array([[r.high for r in row] for row in rates]),
      "critical_scale": field(lambda c: c.value),
      "critical_low": field(lambda c: c.low),
      "critical_high": field(lambda c: c.high),
      "n_seeds": field(lambda c: c.n_seeds),
      "mean_field": np.array([np.sqrt(ex.theory.critical_sigma_w2(a, 0.0))
                              for a in ACTIVATIONS]),
      "quenched": np.array([[np.sqrt(ex.theory.quenched_critical_sigma_w2(
          a, width, init=init, depth=depth)) for init in INITS]
                            for a in ACTIVATIONS]),
      "batchnorm_rate": np.array([
          0.5 * ex.theory.batchnorm_log_gradient_rate(a, bn_batch)
          for a in ACTIVATIONS]),
      "batchnorm_measured": np.array([[np.ravel(x)[0] for x in r[:3]]
                                      for r in bn_all_g]),
      "residual_theory": residual(width),
      "residual_mean_field": residual(None),
      "batch": np.array(bn_batch),
      "width": np.array(width),
  }


def _mean_over_g(m: ex.GradientMap) -> ex.GradientMap:
  """One point: the log growth averaged over the scales (a slope is linear,
  so its rate is the mean of the rates, with a bootstrap over seeds)."""
  return ex.GradientMap(
      log_growth=m.log_growth.mean(axis=0, keepdims=True),
      log_state_norm=m.log_state_norm.mean(axis=0, keepdims=True),
      overflow_step=m.overflow_step.max(axis=0, keepdims=True),
      axes={"weight_scale": m.weight_scales[:1]}, steps=m.steps,
      config=m.config)


# critical_scale: NaN where the rate never crosses 0 in range (batch norm,
# residual). log_state_norm: a tanh state at g < 1 decays to exactly 0.
# Batch norm runs fewer seeds: NaN pads its seed axis.
ALLOW_NONFINITE = {"critical_scale", "critical_low", "critical_high",
                   "log_state_norm", "log_growth", "overflow_step"}
INITS = ("gaussian", "orthogonal")


def plot(results: dict[str, np.ndarray]):
  """2 x 4 maps (rows: tanh, ReLU; columns: the variants), one colour bar
  per row."""
  fig, axes = plotting.new_figure(2, 4, width="full", height=5.4,
                                  sharex=True, sharey=True)
  gs, steps = results["weight_scales"], results["steps"]
  with plotting.paper_style():
    for a, act in enumerate(ACTIVATIONS):
      z = results["log_growth"][a] / np.log(10)
      finite = np.abs(z[np.isfinite(z)])
      vmax = float(np.clip(np.percentile(finite, 98), 1, 30))
      for v, var in enumerate(VARIANTS):
        ax = axes[a, v]
        m = _as_map(results, a, v)
        image = plotting.draw_growth_map(ax, m, vmax=vmax, colorbar=False,
                                         legend=False, critical=False)
        if var in ("plain", "orthogonal"):
          lines = _edge_lines(ax, results, a, v)
        elif var == "batch norm":
          lines = _batchnorm_lines(results, a, m)
        else:
          lines = _residual_lines(ax, results, a, m)
        ax.text(0.03, 0.97, "\n".join(lines), transform=ax.transAxes,
                va="top", ha="left", fontsize=5.2,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white",
                      "ec": "none", "alpha": 0.85})
        ax.set_title(f"{act}, {var}")
        ax.set_xlabel("weight scale $g$" if a == 1 else "")
        ax.set_ylabel("depth $L$ (layers)" if v == 0 else "")
      cb = fig.colorbar(image, ax=list(axes[a]), pad=0.01, aspect=25)
      cb.set_label("log$_{10}$ growth")
    plotting.label_panels(axes)
    fig.suptitle(
        f"MLPs, width {int(results['width'])}, one input (batch norm: "
        f"B = {int(results['batch'])}): log$_{{10}}\\|J_L\\cdots J_1 v\\|$"
        f" (JVP, seed mean); solid line: measured $g_c$, dashed: mean field "
        f"$\\chi_1$ = 1,\ndash-dot: finite width, one input; rates in nats/"
        f"layer, [{LEVEL:.0%} bootstrap interval] (seeds); residual contours:"
        f" measured (solid) and theory (dashed) at equal levels", fontsize=7)
  return fig


def _edge_lines(ax, results, a, v) -> list[str]:
  """Measured, mean-field and finite-width edges: lines and their text."""
  gc = results["critical_scale"][a, v]
  mf = results["mean_field"][a]
  fw = results["quenched"][a, INITS.index(_INIT[VARIANTS[v]])]
  for x, ls, color in ((gc, "-", "k"), (mf, "--", "k"), (fw, "-.", FINITE)):
    if np.isfinite(x):
      ax.axvline(x, color=color, ls=ls, lw=0.9)
  measured = ("measured $g_c$ " + _fmt(gc, results["critical_low"][a, v],
                                       results["critical_high"][a, v],
                                       results["n_seeds"][a, v])
              if np.isfinite(gc) else "no $g_c$ in range")
  return [measured, f"mean field {mf:.3f}", f"finite width {fw:.3f}"]


def _batchnorm_lines(results, a, m) -> list[str]:
  v, lo, hi = results["batchnorm_measured"][a]
  n = int(np.sum(np.isfinite(m.log_growth[0, -1])))
  return [f"B = {int(results['batch'])}: rate (mean over g)",
          f"{_fmt(v, lo, hi, n, signed=True)}",
          f"theory {results['batchnorm_rate'][a]:+.3f}"]


def _residual_lines(ax, results, a, m) -> list[str]:
  """Theory contours at the measured ones' levels, and the numbers."""
  gs, steps = results["weight_scales"], results["steps"]
  levels = RESIDUAL_LEVELS[ACTIVATIONS[a]]
  measured = np.nanmean(m.log_growth, axis=-1).T / np.log(10)
  theory = results["residual_theory"][a].T / np.log(10)
  for z, ls in ((measured, "-"), (theory, "--")):
    ax.contour(gs, steps, z, levels=levels, colors="k", linewidths=0.6,
               linestyles=ls)
  rate = m.rate(interval=LEVEL)
  n = int(np.min(rate.n_seeds))
  out = []
  if ACTIVATIONS[a] == "relu":
    for g in (1.0, gs[-1]):
      k = int(np.argmin(np.abs(gs - g)))
      L = len(steps)
      slope = lambda y: np.polyfit(steps[L // 4:], y[L // 4:], 1)[0]
      measured = _fmt(rate.value[k], rate.low[k], rate.high[k], n)
      out += [f"g = {gs[k]:.2f}: {measured}",
              f"  theory {slope(results['residual_theory'][a, k]):.3f}, mean "
              f"field {slope(results['residual_mean_field'][a, k]):.3f}"]
    return out
  k = int(np.argmin(np.abs(gs - 1.0)))
  L = len(steps)
  out.append(f"g = {gs[k]:.2f}, log$_{{10}}$ growth at L = {L // 4} / {L}:")
  for depth in (L // 4, L):
    v, lo, hi = _mean_interval(m.log_growth[k, depth - 1] / np.log(10))
    predicted = results["residual_theory"][a, k, depth - 1] / np.log(10)
    out.append(f"  {v:.2f} [{lo:.2f}, {hi:.2f}], theory {predicted:.2f}")
  out.append("grows as $\\sqrt{L}$ (no rate)")
  return out


FINITE = "#b2182b"
_INIT = {"plain": "gaussian", "orthogonal": "orthogonal"}


def _fmt(value, low, high, n, *, signed=False) -> str:
  """``"v [lo, hi] (n)"``."""
  f = "+.3f" if signed else ".3f"
  return f"{value:{f}} [{low:{f}}, {high:{f}}] ({int(n)})"


def _mean_interval(values: np.ndarray, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
  """Mean of the finite ``values`` (over seeds) and its ``LEVEL``
  percentile bootstrap interval (numpy seed ``seed``)."""
  v = values[np.isfinite(values)]
  boot = v[np.random.default_rng(seed).integers(0, v.size,
                                                (resamples, v.size))]
  low, high = np.percentile(boot.mean(axis=1),
                            [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
  return float(v.mean()), float(low), float(high)


def _as_map(results, a: int, v: int) -> ex.GradientMap:
  """Map ``[a, v]`` from the (cached) arrays, without batch norm's padding
  seeds."""
  keep = np.any(np.isfinite(results["log_growth"][a, v]), axis=(0, 1))
  pick = lambda k: results[k][a, v][..., keep]
  return ex.GradientMap(log_growth=pick("log_growth"),
                        log_state_norm=pick("log_state_norm"),
                        overflow_step=pick("overflow_step").astype(int),
                        axes={"weight_scale": results["weight_scales"]},
                        steps=results["steps"],
                        config={"model": "mlp", "method": "jvp"})


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
