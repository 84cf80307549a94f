"""Scalar chains: composing one unit with itself multiplies its slopes.

The derivative of ``f_k(x) = phi(w f_(k-1)(x) + b)`` is, by the chain rule,
a product of k factors ``w phi'(.)``. With w = 8: ReLU's slope on x > 0 is
8, 64, 512 for 1, 2, 3 layers (explodes everywhere); tanh's is 8, 64, 512 at
0 and collapses off 0 (a cliff between plateaus); sigmoid's outputs crowd
toward 1, where the slope vanishes; with bias ``-w/2`` sigmoid keeps its
fixed point at 1/2 and sharpens into a step. Last, the 3-unit tanh
"minefield" ``tanh(5 tanh(40x-5) - 5 tanh(40x) + 5 tanh(40x+5))``: flat
almost everywhere, with narrow spikes of slope ~200, so the gradient seen
at a random x is either useless or huge. Derivatives are ``jax.grad``
(forward mode, vmapped over x) in float64.

Run: ``python experiments/fig03_scalar_chains.py [--quick]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"weight": 8.0, "points": 241, "minefield_points": 1601}
FULL = {"weight": 8.0, "points": 2401, "minefield_points": 16001}

DEPTH = 3
# name: (activation, bias as a multiple of w, x range, reference x).
CHAINS = {
    "relu": ("relu", 0.0, (-0.5, 1.0), 0.5),
    "tanh": ("tanh", 0.0, (-0.6, 0.6), 0.0),
    "sigmoid": ("sigmoid", 0.0, (-1.0, 1.0), 0.0),
    "sigmoid_bias": ("sigmoid", -0.5, (-0.25, 1.25), 0.5),
}
_TITLES = {
    "relu": "ReLU: $\\mathrm{relu}(w x)$",
    "tanh": "tanh: $\\tanh(w x)$",
    "sigmoid": "sigmoid: $\\sigma(w x)$",
    "sigmoid_bias": "sigmoid, bias $-w/2$: $\\sigma(w x - w/2)$",
}
_FLAT = 1e-3  # |g'| below this counts as flat ground in the minefield


def compute(config: dict) -> dict[str, np.ndarray]:
  """Values and derivatives of 1-, 2- and 3-layer chains, and the minefield.

  Args:
    config: ``weight`` (w > 0), ``points`` (int, grid size per chain),
      ``minefield_points`` (int, grid on [-0.4, 0.4]).

  Returns:
    ``weight`` (). Per chain ``c`` in ``CHAINS``: ``{c}_x`` (points,); ``{c}_f`` and
    ``{c}_df`` (3, points), the k-layer chain's value and derivative;
    ``{c}_ref_x`` () and ``{c}_ref_slope`` (3,), the derivatives at a
    reference point. ``minefield_x``, ``minefield_f``, ``minefield_df``
    (minefield_points,); ``minefield_max_slope`` () and
    ``minefield_flat_fraction`` (), the share of x with ``|g'| < 1e-3``.
  """
  w = float(config["weight"])
  n = int(config["points"])
  results = {"weight": np.asarray(w)}
  with jax.enable_x64(True):
    for name, (act, bias, (lo, hi), ref) in CHAINS.items():
      chain = _chain(ex.activation(act).fn, w, bias * w)
      x = jnp.linspace(lo, hi, n, dtype=jnp.float64)
      values, slopes = jax.vmap(lambda v, c=chain: jax.jvp(c, (v,), (1.0,)))(x)
      _, ref_slope = jax.jvp(chain, (jnp.float64(ref),), (jnp.float64(1),))
      results[f"{name}_x"] = np.asarray(x)
      results[f"{name}_f"] = np.asarray(values).T
      results[f"{name}_df"] = np.asarray(slopes).T
      results[f"{name}_ref_x"] = np.asarray(ref, dtype=np.float64)
      results[f"{name}_ref_slope"] = np.asarray(ref_slope)

    x = jnp.linspace(-0.4, 0.4, int(config["minefield_points"]),
                     dtype=jnp.float64)
    values = jax.vmap(_minefield)(x)
    slopes = jax.vmap(jax.grad(_minefield))(x)
  slopes = np.asarray(slopes)
  results.update({
      "minefield_x": np.asarray(x),
      "minefield_f": np.asarray(values),
      "minefield_df": slopes,
      "minefield_max_slope": np.abs(slopes).max(),
      "minefield_flat_fraction": np.mean(np.abs(slopes) < _FLAT),
  })
  return results


def _chain(phi, w, b):
  """x -> (f_1(x), ..., f_DEPTH(x)), f_k = phi(w f_(k-1) + b), f_0 = x."""
  def chain(x):
    outputs = []
    for _ in range(DEPTH):
      x = phi(w * x + b)
      outputs.append(x)
    return jnp.stack(outputs)
  return chain


def _minefield(x):
  return jnp.tanh(5 * jnp.tanh(40 * x - 5) - 5 * jnp.tanh(40 * x)
                  + 5 * jnp.tanh(40 * x + 5))


def plot(results: dict[str, np.ndarray]):
  """Top: each chain's value and |derivative|; bottom: the minefield."""
  from matplotlib.figure import Figure

  layer_colors = plotting.PALETTE[:DEPTH]
  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 6.4), layout="constrained")
    grid = fig.add_gridspec(3, 4, height_ratios=[1, 1, 1.05])
    fn_axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    df_axes = [fig.add_subplot(grid[1, i], sharex=fn_axes[i])
               for i in range(4)]
    mine_f = fig.add_subplot(grid[2, :2])
    mine_df = fig.add_subplot(grid[2, 2:], sharex=mine_f)
    w = _num(results["weight"])

    for i, name in enumerate(CHAINS):
      x = results[f"{name}_x"]
      ax_f, ax_df = fn_axes[i], df_axes[i]
      for k in range(DEPTH):
        label = f"{k + 1} layer" + ("s" if k else "")
        ax_f.plot(x, results[f"{name}_f"][k], color=layer_colors[k],
                  label=label)
        slope = np.abs(results[f"{name}_df"][k])
        ax_df.semilogy(x, np.where(slope > 0, slope, np.nan),
                       color=layer_colors[k])
      ax_f.set_title(_TITLES[name], fontsize=7)
      ax_f.set_ylabel("$f_k(x)$")
      ax_df.set_ylabel("$|df_k/dx|$")
      ax_df.set_xlabel("input $x$")
      ax_f.tick_params(labelbottom=False)
      ref = float(results[f"{name}_ref_x"])
      ax_df.axvline(ref, color="0.6", lw=0.6, ls="--", zorder=0)
      slopes = ", ".join(_num(s) for s in results[f"{name}_ref_slope"])
      ax_df.text(0.03, 0.97, f"slope at x = {ref:g}:\n{slopes}",
                 transform=ax_df.transAxes, fontsize=6, va="top",
                 ha="left", color="0.15",
                 bbox={"facecolor": "white", "edgecolor": "none",
                       "alpha": 0.85, "pad": 1.0})
    fn_axes[0].legend(loc="upper left", title=f"w = {w}",
                      title_fontsize=7)
    fn_axes[0].set_ylim(-15, None)
    for ax in df_axes:
      lo, hi = ax.get_ylim()
      ax.set_ylim(max(lo, 1e-12), hi * 30)

    x = results["minefield_x"]
    slope = results["minefield_df"]
    mine_f.plot(x, results["minefield_f"], color="0.1")
    mine_f.set_title("3-unit tanh minefield:\n$g(x) = \\tanh(5\\tanh(40x-5) - "
                     "5\\tanh(40x) + 5\\tanh(40x+5))$", fontsize=7)
    mine_f.set_xlabel("input $x$")
    mine_f.set_ylabel("$g(x)$")
    for sign, color, label in ((1, plotting.PALETTE[0], "$dg/dx > 0$"),
                               (-1, plotting.PALETTE[1], "$dg/dx < 0$")):
      mine_df.semilogy(x, np.where(sign * slope > 0, np.abs(slope), np.nan),
                       color=color, label=label)
    mine_df.axhline(_FLAT, color="0.5", lw=0.6, ls=":")
    mine_df.set_ylim(1e-12, 2e3)
    mine_df.set_title("its derivative (jax.grad): flat, or a spike\n",
                      fontsize=7)
    mine_df.set_xlabel("input $x$")
    mine_df.set_ylabel("$|dg/dx|$")
    mine_df.legend(loc="upper right")
    flat = float(results["minefield_flat_fraction"])
    mine_df.text(0.5, 0.03,
                 f"max $|dg/dx|$ = "
                 f"{float(results['minefield_max_slope']):.0f}\n"
                 f"$|dg/dx| < 10^{{-3}}$ on {100 * flat:.0f}% of "
                 f"$[-0.4, 0.4]$",
                 transform=mine_df.transAxes, fontsize=6.5, va="bottom",
                 ha="center", color="0.15")
    plotting.label_panels(fn_axes + df_axes + [mine_f, mine_df])
  return fig


def _num(value: float) -> str:
  value = float(value)
  if value == 0 or 1e-2 <= abs(value) < 1e4:
    return f"{value:.3g}"
  mantissa, exponent = f"{value:.1e}".split("e")
  return f"{mantissa}$\\times10^{{{int(exponent)}}}$"


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
