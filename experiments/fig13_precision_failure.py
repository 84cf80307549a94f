"""Where precision fails: native float16/bfloat16/float32 backprop vs log space.

Backprop through a T-step RNN ``h_t = phi(g W0 h_(t-1))`` (tanh and ReLU,
no bias, no input) from a random unit cotangent at ``h_T``, computed two
ways: renormalised in log space (never overflows; the reference map,
float32), and natively, as training computes it, in float16, bfloat16 and
float32 (``ex.vjp_growth(..., return_native=True)``). Over weight scale g
and lag (steps back from ``h_T``), the colour is the log-space gradient
growth and the hatched regions are, per format, where the native gradient
norm is ``inf``/NaN or exactly 0 (in at least half the seeds). The native
norm is ``sqrt(sum g^2)`` computed in the format, as an optimiser's
global-norm clipping computes it, so it fails at the square root of the
format's range: above ``sqrt(max)`` (256 in float16, 1.8e19 in bfloat16 and
float32) and below about ``sqrt(smallest number)`` (2.4e-4 in float16; near
1e-19 in float32, whose subnormals XLA's CPU backend flushes to zero).
bfloat16 shares float32's exponent range, so their regions coincide; float16
fails within tens of steps. For ReLU the native forward state itself decays
to exactly 0 below the edge of chaos (then every gradient is 0: ReLU's
derivative at 0 is 0) and overflows above it (then the gradient is NaN, or
an exact 0 through ReLU's mask), at every lag.

The log-space reference is ``ex.sweep(..., method="vjp")`` per activation
(float32; the built-in ReLU RNN is declared homogeneous, so its state is
renormalised and never overflows). The native passes are plain engine
calls, one per activation x format x seed x scale in a Python loop (params
are data: one compilation per activation and format), on params from
``ex.rnn.init`` with this figure's own keys: seed s splits
``jax.random.split(jax.random.key(key), seeds)[s]`` into init, state and
probe keys, the same unit draws (rounded) in every format. Nothing relies
on these being the sweep's own draws (with jax's default threefry they
happen to be): the failure regions are a fraction of seeds, the reference
map a seed mean.

Run: ``python experiments/fig13_precision_failure.py [--quick]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

ACTIVATIONS = ("tanh", "relu")
DTYPES = ("float16", "bfloat16", "float32")

QUICK = {"hidden": 32, "length": 64, "n_scales": 12, "seeds": 2,
         "scale_range": [0.3, 3.0], "key": 0}
FULL = {"hidden": 128, "length": 256, "n_scales": 36, "seeds": 4,
        "scale_range": [0.3, 3.0], "key": 0}
CACHE_VERSION = 2   # bump when compute() changes (2: sweep + engine loop)

# Native gradient norms are inf, NaN or 0 where a format fails: the point of
# the figure. Their log10 is therefore legitimately non-finite.
ALLOW_NONFINITE = {"native_log10_norm"}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Log-space and native backprop growth over weight scale x lag.

  Args:
    config: ``hidden``, ``length`` (T), ``n_scales``, ``seeds``,
      ``scale_range`` ([lo, hi], log-spaced), ``key`` (int: the sweeps'
      key, and the root of the native passes' own keys).

  Returns:
    ``weight_scales``: (n_s,). ``lags``: (T,) 1..T. ``log10_growth``: (2,
    n_s, T) log-space gradient growth at each lag (float32, seed mean),
    activations in ``ACTIVATIONS`` order. ``native_log10_norm``: (2, 3, n_s,
    T, seeds) log10 of the native gradient norm per format in ``DTYPES``
    (``-inf`` for 0, ``inf``/NaN as computed). ``invalid_fraction``,
    ``zero_fraction``: (2, 3, n_s, T) fraction of seeds whose native norm
    is non-finite or 0 / exactly 0. ``critical_scale``: (2,) of the
    log-space map. ``log10_max``, ``log10_tiny``: (3,) each format's
    largest finite and smallest subnormal number. ``hidden``: ().
  """
  n, T, seeds = (int(config[k]) for k in ("hidden", "length", "seeds"))
  gs = np.geomspace(*config["scale_range"], int(config["n_scales"]))
  # Engine index t is the gradient t + 1 steps back from h_T: lag t + 1.
  maps = [ex.sweep("rnn", activation=a, weight_scales=gs, method="vjp",
                   hidden=n, length=T, seeds=seeds, key=int(config["key"]),
                   progress=False) for a in ACTIVATIONS]
  reference = np.stack([m.log_growth for m in maps])     # (2, n_s, T, seeds)
  norms = np.zeros((len(ACTIVATIONS), len(DTYPES), len(gs), T, seeds))
  invalid = np.zeros(norms.shape, bool)
  keys = jax.random.split(jax.random.key(int(config["key"])), seeds)
  for s, key in enumerate(keys):
    k_init, k_state, k_probe = jax.random.split(key, 3)
    h0 = jax.random.normal(k_state, (n,), jnp.float32)
    for a, act in enumerate(ACTIVATIONS):
      for d, dtype in enumerate(DTYPES):
        p = ex.rnn.init(k_init, n, activation=act, dtype=dtype)
        for i, g in enumerate(gs):
          out = ex.vjp_growth(
              ex.rnn.step, p.replace(weight_scale=jnp.asarray(g, dtype)),
              h0.astype(dtype), length=T, key=k_probe, return_native=True)
          norms[a, d, i, :, s] = np.asarray(out.native_norm, np.float64)
          invalid[a, d, i, :, s] = np.asarray(out.native_invalid)
  with np.errstate(divide="ignore", invalid="ignore"):
    native_log10 = np.log10(norms)
  limits = [ex.theory.dtype_limits(d) for d in DTYPES]
  return {
      "weight_scales": gs,
      "lags": maps[0].steps,
      "log10_growth": reference.mean(-1) / np.log(10),
      "native_log10_norm": native_log10,
      "invalid_fraction": invalid.mean(-1),
      "zero_fraction": (norms == 0).mean(-1),
      "critical_scale": np.array([m.critical_scale() for m in maps]),
      "log10_max": np.log10([float(lim.max) for lim in limits]),
      "log10_tiny": np.log10([float(lim.smallest_subnormal)
                              for lim in limits]),
      "hidden": np.array(n),
  }


def plot(results: dict[str, np.ndarray]):
  """Two maps (tanh, ReLU) with each format's failure region outlined."""
  from matplotlib import colors
  from matplotlib.lines import Line2D
  from matplotlib.patches import Patch

  fig, axes = plotting.new_figure(1, 2, width="full", height=3.4,
                                  sharey=True)
  gs, lags = results["weight_scales"], results["lags"]
  z_all = results["log10_growth"]
  vmax = float(np.clip(np.percentile(np.abs(z_all[np.isfinite(z_all)]), 98),
                       1, 40))
  norm = colors.TwoSlopeNorm(0.0, -vmax, vmax)
  styles = {"float16": ("-", "//"), "bfloat16": ("--", "\\\\"),
            "float32": (":", "..")}
  import matplotlib as mpl

  with plotting.paper_style(), mpl.rc_context({"hatch.linewidth": 0.45,
                                               "hatch.color": "0.2"}):
    for a, (ax, act) in enumerate(zip(axes, ACTIVATIONS)):
      z = results["log10_growth"][a].T                     # (T, n_s)
      image = ax.pcolormesh(gs, lags, np.ma.masked_invalid(z),
                            shading="nearest", cmap="RdBu_r", norm=norm,
                            rasterized=True)
      ax.contour(gs, lags, z, levels=[0.0], colors="k", linewidths=0.6)
      shares = []
      for d, name in enumerate(DTYPES):
        bad = results["invalid_fraction"][a, d].T
        zero = results["zero_fraction"][a, d].T
        ls, hatch = styles[name]
        color = plotting.DTYPE_COLORS[name]
        if bad.max() >= 0.5 and bad.min() < 0.5:
          ax.contourf(gs, lags, bad, levels=[0.5, 1.01], colors="none",
                      hatches=[hatch])
          ax.contour(gs, lags, bad, levels=[0.5], colors=[color],
                     linewidths=1.5, linestyles=ls)
        share_bad = float((bad >= 0.5).mean())
        share_zero = float(((zero >= 0.5)).mean())
        shares.append(f"{name}: {100 * share_bad:.0f}% fail "
                      f"({100 * share_zero:.0f}% exact 0)")
      gc = results["critical_scale"][a]
      if np.isfinite(gc):
        ax.axvline(gc, color="k", lw=0.9, ls="-.")
        ax.text(gc, lags[-1] * 1.01, f" $g_c$ = {gc:.2f}", fontsize=6,
                va="bottom")
      ax.text(0.02, 0.02, "\n".join(shares), transform=ax.transAxes,
              fontsize=5.8, va="bottom",
              bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                    "alpha": 0.85})
      ax.set_xscale("log")
      ax.set_xticks([0.3, 0.5, 1, 2, 3], ["0.3", "0.5", "1", "2", "3"])
      ax.set_xticks([], minor=True)
      ax.set_xlabel("weight scale $g$ ($\\sigma_w$)")
      ax.set_title(f"{act} RNN, {int(results['hidden'])} units", pad=9)
    axes[0].set_ylabel(f"lag (steps back from $h_T$, T = {int(lags[-1])})")
    cb = fig.colorbar(image, ax=list(axes), pad=0.01, aspect=30)
    cb.set_label("log$_{10}$ gradient growth, log space (float32)")
    handles = [Patch(facecolor="white", edgecolor=plotting.DTYPE_COLORS[n],
                     hatch=styles[n][1], linestyle=styles[n][0],
                     label=f"native {n}: $\\|g\\|$ inf/NaN or 0")
               for n in DTYPES]
    handles.append(Line2D([], [], color="k", lw=0.6,
                          label="log-space growth = 1"))
    handles.append(Line2D([], [], color="k", lw=0.9, ls="-.",
                          label="measured $g_c$ (log space)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=5,
               fontsize=6, handlelength=2.4)
    plotting.label_panels(axes)
    top = 0.5 * results["log10_max"]
    fig.suptitle(
        "Native backprop: the gradient norm $\\sqrt{\\sum g^2}$ computed in "
        "the format (as global-norm clipping does)\noverflows at "
        f"$\\sqrt{{max}}$ = 10$^{{{top[0]:.1f}}}$ (float16), "
        f"10$^{{{top[2]:.1f}}}$ (bfloat16, float32); exact 0 below "
        f"10$^{{{0.5 * results['log10_tiny'][0]:.1f}}}$ (float16)",
        fontsize=7)
  return fig


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
