"""Where precision fails: native float16/bfloat16/float32 backprop vs log space.

Backprop through a T-step RNN ``h_t = phi(g W0 h_(t-1))`` (tanh and ReLU,
no bias, no input) from a random unit cotangent at ``h_T``, computed two
ways: renormalised in log space (never overflows; the reference map,
float32, ``ex.sweep(..., method="vjp")``), and natively, as training
computes it, in float16, bfloat16 and float32. Over weight scale g and lag
(steps back from ``h_T``), the colour is the log-space gradient growth and
the lines are, per format, where the native gradient fails in at least
half the seeds:

* main criterion, on the gradient entries themselves: some entry is
  ``inf``/NaN, or every entry is exactly 0 (nothing left to learn from).
  It fails where the entries leave the format's range: above its largest
  number (65504 in float16, 3.4e38 in bfloat16/float32) or below its
  smallest (6e-8 in float16, float16's subnormals being kept; 1.2e-38 in
  float32, whose subnormals XLA's CPU backend flushes to zero).
* secondary criterion (dotted): the norm ``sqrt(sum g^2)`` computed in the
  format, as an optimiser's global-norm clipping computes it, is
  ``inf``/NaN or 0. The squares leave the range first, so this fails at
  about the square root of the range (256 and 2.4e-4 in float16), at half
  the lag of the main criterion, on gradients that are still finite and
  non-zero.

bfloat16 shares float32's exponent range, so their lines nearly coincide.
For ReLU the native forward state itself decays to exactly 0 below the edge
of chaos (then every gradient is 0: ReLU's derivative at 0 is 0) and
overflows above it (then the gradient is NaN, or an exact 0 through ReLU's
mask), at every lag. The numbers quoted are the lag at which the native
gradient first fails, per seed, at a few weight scales (median [min, max]
over seeds).

The native pass is plain backprop, ``jax.vjp`` of ``ex.rnn.step`` through a
``lax.scan`` (what ``jax.grad`` of a loss at ``h_T`` computes), vmapped
over the weight scale, on params from ``ex.rnn.init`` with this figure's own
keys: seed s splits ``jax.random.split(jax.random.key(key), seeds)[s]`` into
init, state and probe keys, the same unit draws (rounded) in every format,
and the probe drawn as ``ex.vjp_growth`` draws it. Its in-format norm equals
``ex.vjp_growth(..., return_native=True).native_norm`` (tested); the entry
flags are computed here because ``Growth`` reports only that norm.

Run: ``python experiments/fig13_precision_failure.py [--quick]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

ACTIVATIONS = ("tanh", "relu")
DTYPES = ("float16", "bfloat16", "float32")

# The g at which the first failing lag is quoted, per activation.
_QUOTE = [[0.4, 0.7, 2.0], [0.9, 1.2, 2.0]]
QUICK = {"hidden": 32, "length": 64, "n_scales": 12, "seeds": 3,
         "scale_range": [0.3, 3.0], "quote_scales": _QUOTE, "key": 0}
FULL = {"hidden": 128, "length": 256, "n_scales": 36, "seeds": 8,
        "scale_range": [0.3, 3.0], "quote_scales": _QUOTE, "key": 0}
CACHE_VERSION = 3   # 3: entry-level criterion, first failing lag per seed

# Native gradient norms are inf, NaN or 0 where a format fails: the point of
# the figure. Their log10 is therefore legitimately non-finite.
ALLOW_NONFINITE = {"native_log10_norm"}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Log-space and native backprop growth over weight scale x lag.

  Args:
    config: ``hidden``, ``length`` (T), ``n_scales``, ``seeds``,
      ``scale_range`` ([lo, hi], log-spaced), ``quote_scales`` (per
      activation, the g at which the first failing lag is quoted; the
      nearest grid values are used), ``key`` (int: the sweeps' key, and
      the root of the native passes' own keys).

  Returns:
    ``weight_scales``: (n_s,). ``lags``: (T,) 1..T. ``log10_growth``: (2,
    n_s, T) log-space gradient growth at each lag (float32, seed mean),
    activations in ``ACTIVATIONS`` order. ``native_log10_norm``: (2, 3, n_s,
    T, seeds) log10 of the in-format native gradient norm per format in
    ``DTYPES`` (``-inf`` for 0, ``inf``/NaN as computed).
    ``entry_fraction``: (2, 3, n_s, T) fraction of seeds whose native
    gradient has an inf/NaN entry or is all exactly 0 (main criterion);
    ``nonfinite_fraction``, ``zero_fraction``: the two parts apart.
    ``norm_fraction``: (2, 3, n_s, T) fraction whose in-format norm is
    inf/NaN or 0 (secondary). ``floor_fraction``: (2, 3, n_s, T) fraction
    whose gradient is not all 0 but every entry is within 2 of the format's
    smallest subnormal (rounding noise at the floor; float16, which keeps
    its subnormals). ``quote_scales``: (2, n_q) grid values of g nearest
    ``config["quote_scales"]``; ``first_entry_lag``, ``first_norm_lag``,
    ``first_floor_lag``: (2, 3, n_q, seeds) the first lag failing each
    criterion, or at the floor (T + 1: none). ``critical_scale``: (2,) of
    the log-space map.
    ``log10_max``, ``log10_tiny``: (3,) each format's largest finite and
    smallest subnormal number. ``hidden``: ().
  """
  n, T, seeds = (int(config[k]) for k in ("hidden", "length", "seeds"))
  gs = np.geomspace(*config["scale_range"], int(config["n_scales"]))
  # Engine index t is the gradient t + 1 steps back from h_T: lag t + 1.
  maps = [ex.sweep("rnn", activation=a, weight_scales=gs, method="vjp",
                   hidden=n, length=T, seeds=seeds, key=int(config["key"]),
                   progress=False) for a in ACTIVATIONS]
  reference = np.stack([m.log_growth for m in maps])     # (2, n_s, T, seeds)
  shape = (len(ACTIVATIONS), len(DTYPES), len(gs), T, seeds)
  norms, max_abs = np.zeros(shape), np.zeros(shape)
  nonfinite, zero = np.zeros(shape, bool), np.zeros(shape, bool)
  keys = jax.random.split(jax.random.key(int(config["key"])), seeds)
  for s, key in enumerate(keys):
    k_init, k_state, k_probe = jax.random.split(key, 3)
    h0 = jax.random.normal(k_state, (n,), jnp.float32)
    for a, act in enumerate(ACTIVATIONS):
      for d, dtype in enumerate(DTYPES):
        p = ex.rnn.init(k_init, n, activation=act, dtype=dtype)
        out = native_backprop(p, jnp.asarray(gs, dtype), h0.astype(dtype),
                              probe(k_probe, n, dtype), length=T)
        nonfinite[a, d, :, :, s] = np.asarray(out["nonfinite"])
        zero[a, d, :, :, s] = np.asarray(out["all_zero"])
        norms[a, d, :, :, s] = np.asarray(out["norm"], np.float64)
        max_abs[a, d, :, :, s] = np.asarray(out["max_abs"], np.float64)
  limits = [ex.theory.dtype_limits(d) for d in DTYPES]
  tiny = np.array([float(lim.smallest_subnormal) for lim in limits])
  entry = nonfinite | zero
  norm_bad = ~np.isfinite(norms) | (norms == 0)
  floor = (max_abs > 0) & (max_abs <= 2 * tiny[None, :, None, None, None])
  with np.errstate(divide="ignore", invalid="ignore"):
    native_log10 = np.log10(norms)
  at = np.array([[int(np.argmin(np.abs(np.log(gs / q)))) for q in row]
                 for row in config["quote_scales"]])         # (2, n_q)
  first = {name: np.stack([_first_lag(flags[a][:, at[a]])
                           for a in range(len(ACTIVATIONS))])
           for name, flags in (("entry", entry), ("norm", norm_bad),
                               ("floor", floor))}
  return {
      "weight_scales": gs,
      "lags": maps[0].steps,
      "log10_growth": reference.mean(-1) / np.log(10),
      "native_log10_norm": native_log10,
      "entry_fraction": entry.mean(-1),
      "nonfinite_fraction": nonfinite.mean(-1),
      "zero_fraction": zero.mean(-1),
      "norm_fraction": norm_bad.mean(-1),
      "floor_fraction": floor.mean(-1),
      "quote_scales": gs[at],
      "first_entry_lag": first["entry"],
      "first_norm_lag": first["norm"],
      "first_floor_lag": first["floor"],
      "critical_scale": np.array([m.critical_scale() for m in maps]),
      "log10_max": np.log10([float(lim.max) for lim in limits]),
      "log10_tiny": np.log10(tiny),
      "hidden": np.array(n),
  }


def probe(key, hidden, dtype):
  """The unit cotangent at ``h_T``, drawn as ``ex.vjp_growth`` draws it:
  float32 normals, normalised in float32, then cast."""
  q = jax.random.normal(key, (hidden, 1), jnp.float32)[:, 0]
  return (q / jnp.linalg.norm(q)).astype(dtype)


@functools.partial(jax.jit, static_argnames="length")
def native_backprop(params, weight_scales, h0, u, *, length):
  """Plain backprop in the params' dtype, for every weight scale.

  Args:
    params: ``ex.rnn`` params (one seed), any float dtype.
    weight_scales: (n_s,) gains g, in the params' dtype.
    h0: (hidden,) initial state; u: (hidden,) cotangent at ``h_T``.
    length: T.

  Returns:
    dict of (n_s, T) arrays, index t holding the gradient at ``h_(T-t-1)``
    (lag t + 1, as in ``ex.vjp_growth``): ``nonfinite`` (any entry inf/NaN),
    ``all_zero`` (every entry exactly 0), ``max_abs`` (the largest
    ``|entry|``), ``norm`` (``sqrt(sum g^2)`` in
    the dtype, as ``Growth.native_norm``).
  """

  def one(g):
    p = params.replace(weight_scale=g)

    def forward(h, _):
      return ex.rnn.step(p, h), h

    _, hs = jax.lax.scan(forward, h0, None, length=length)

    def backward(v, h):
      v = jax.vjp(lambda y: ex.rnn.step(p, y), h)[1](v)[0]
      return v, {"nonfinite": jnp.any(~jnp.isfinite(v)),
                 "all_zero": jnp.all(v == 0),
                 "max_abs": jnp.max(jnp.abs(v)),
                 "norm": jnp.sqrt(jnp.sum(jnp.square(v)))}

    _, out = jax.lax.scan(backward, u, hs, reverse=True)
    return jax.tree.map(lambda x: x[::-1], out)

  with jax.default_matmul_precision("highest"):
    return jax.vmap(one)(weight_scales)


def _first_lag(fails):
  """``(..., T, seeds)`` bool -> ``(..., seeds)`` first failing lag (1-based;
  T + 1 where none fails)."""
  T = fails.shape[-2]
  first = np.argmax(fails, axis=-2) + 1
  return np.where(fails.any(-2), first, T + 1)


def plot(results: dict[str, np.ndarray]):
  """Two maps (tanh, ReLU) with each format's failure boundaries, and the
  first failing lag per seed at a few weight scales below them."""
  import matplotlib as mpl
  from matplotlib import colors
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D

  gs, lags = results["weight_scales"], results["lags"]
  T = int(lags[-1])
  z_all = results["log10_growth"]
  vmax = float(np.clip(np.percentile(np.abs(z_all[np.isfinite(z_all)]), 98),
                       1, 40))
  norm = colors.TwoSlopeNorm(0.0, -vmax, vmax)
  widths = {"float16": 2.0, "bfloat16": 1.5, "float32": 0.9}
  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 5.6), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[3.2, 0.55, 1.05])
    axes = [fig.add_subplot(grid[0, a]) for a in range(2)]
    key_ax = fig.add_subplot(grid[1, :])
    tables = [fig.add_subplot(grid[2, a]) for a in range(2)]
    for a, (ax, act) in enumerate(zip(axes, ACTIVATIONS)):
      z = results["log10_growth"][a].T                     # (T, n_s)
      image = ax.pcolormesh(gs, lags, np.ma.masked_invalid(z),
                            shading="nearest", cmap="RdBu_r", norm=norm,
                            rasterized=True)
      ax.contour(gs, lags, z, levels=[0.0], colors="k", linewidths=0.5)
      for d, name in enumerate(DTYPES):
        color, lw = plotting.DTYPE_COLORS[name], widths[name]
        for key, style, width in (("entry_fraction", "-", lw),
                                  ("norm_fraction", ":", 0.9),
                                  ("floor_fraction", "-.", 0.9)):
          frac = results[key][a, d].T
          if frac.max() >= 0.5 and frac.min() < 0.5:
            ax.contour(gs, lags, frac, levels=[0.5], colors=[color],
                       linewidths=width, linestyles=style)
      gc = results["critical_scale"][a]
      if np.isfinite(gc):
        ax.axvline(gc, color="k", lw=0.8, ls=(0, (6, 2, 1, 2)))
        ax.text(gc, lags[-1] * 1.01, f" $g_c$ = {gc:.2f}", fontsize=6,
                va="bottom")
      ax.set_xscale("log")
      ax.set_xticks([0.3, 0.5, 1, 2, 3], ["0.3", "0.5", "1", "2", "3"])
      ax.set_xticks([], minor=True)
      ax.set_xlabel("weight scale $g$ ($\\sigma_w$)")
      ax.set_title(f"{act} RNN, {int(results['hidden'])} units", pad=9)
      _quote_table(tables[a], results, a)
    axes[0].set_ylabel(f"lag (steps back from $h_T$, T = {T})")
    cb = fig.colorbar(image, ax=axes, pad=0.01, aspect=25)
    cb.set_label("log$_{10}$ gradient growth, log space (float32)")
    handles = [Line2D([], [], color=plotting.DTYPE_COLORS[n], lw=widths[n],
                      label=n) for n in DTYPES]
    handles += [
        Line2D([], [], color="0.3", lw=1.5,
               label="main: an entry inf/NaN, or all entries 0"),
        Line2D([], [], color="0.3", lw=0.9, ls=":",
               label="secondary: $\\|g\\|$ computed in the format "
               "inf/NaN or 0"),
        Line2D([], [], color="0.3", lw=0.9, ls="-.",
               label="float16: all entries $\\leq$ 2 x its smallest "
               "subnormal (noise)"),
        Line2D([], [], color="k", lw=0.5, label="log-space growth = 1"),
        Line2D([], [], color="k", lw=0.8, ls=(0, (6, 2, 1, 2)),
               label="measured $g_c$ (log space)")]
    key_ax.axis("off")
    with mpl.rc_context({"legend.fontsize": 6}):
      key_ax.legend(handles=handles, loc="center", ncol=3,
                    handlelength=2.6, title="lines: where the native "
                    "gradient fails in at least half the seeds (beyond the "
                    "line, away from $g_c$); bfloat16 and float32 nearly "
                    "coincide", title_fontsize=6)
    plotting.label_panels(axes)
    fig.suptitle(
        "Native backprop in float16 / bfloat16 / float32 against the "
        "log-space measurement: where the native gradient fails",
        fontsize=7)
  return fig


def _quote_table(ax, results, a):
  """The first failing lag per seed, median (min-max), as a text table."""
  T = int(results["lags"][-1])
  gs = results["quote_scales"][a]
  n_seeds = results["first_entry_lag"].shape[-1]
  head = f"{'':14s}" + "".join(f"{'g = ' + format(g, '.2f'):>16s}"
                               for g in gs)
  lines = [head]
  for d, name in enumerate(DTYPES):
    for key, label in (("first_entry_lag", "main"),
                       ("first_norm_lag", "norm")):
      cells = [_lag_range(results[key][a, d, q], T) for q in range(len(gs))]
      lines.append(f"{name if label == 'main' else '':9s}{label:>5s}"
                   + "".join(f"{c:>16s}" for c in cells))
  # Where float16 never fails the main criterion, its entries may still sit
  # at the subnormal floor: say from which lag.
  floor = results["first_floor_lag"][a, 0]
  entry = results["first_entry_lag"][a, 0]
  notes = [f"float16, g = {g:.2f}: never all 0, but at the subnormal "
           f"floor from lag {_lag_range(floor[q], T)}"
           for q, g in enumerate(gs)
           if np.median(entry[q]) > T >= np.median(floor[q])]
  ax.axis("off")
  text = ax.text(
      0.0, 1.0, f"{ACTIVATIONS[a]}: first failing lag, median (min-max) over "
      f"{n_seeds} seeds;\nmain criterion (entries) and norm (secondary)\n"
      + "\n".join(lines + notes), transform=ax.transAxes, va="top",
      ha="left", fontsize=5.6, family="monospace")
  text.set_in_layout(False)   # the table may run past its (empty) axes


def _lag_range(first, T):
  """``"17 (16-18)"``; ``">T"`` where no seed fails within T."""
  def one(x):
    return f">{T}" if x > T else f"{int(x)}"
  med, lo, hi = np.median(first), first.min(), first.max()
  med = hi if med > T else med
  if lo == hi:
    return one(lo)
  return f"{one(np.round(med))} ({one(lo)}-{one(hi)})"


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
