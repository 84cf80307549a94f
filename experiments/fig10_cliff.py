"""The cliff: a one-unit RNN's loss wall, and why clipping keeps descent on it.

Pascanu, Mikolov & Bengio (2013, Section 2.3, Figs. 6-7): the recurrence
``x_t = w sigmoid(x_(t-1)) + b``, ``x_0 = 0.5``, ``T = 50``, loss
``(sigmoid(x_T) - 0.7)**2``. Where ``x_0`` is an unstable fixed point,
``b = x_0 - w sigmoid(x_0)`` (``ex.cliff.cliff_boundary``) with ``w >
w_c = 1 / sigmoid'(x_0) = 4.26``, the orbit switches basin and the loss
jumps: a wall whose gradient grows like ``(w sigmoid'(x_0))**T`` as the
distance to it shrinks. Gradient descent that walks along the wall is hit
by one huge gradient and thrown to a far plateau; clipping the gradient
norm bounds that step and the descent reaches the minimum.

The descent is full-batch gradient descent (GD: the loss is deterministic,
there is no sampling). One start is drawn in detail (panels a, c, d); panel
e runs both descents from ``starts`` random starts near the wall (``w0``
uniform in ``start_w``, ``b0 = b_wall(w0) + db`` with ``db`` uniform in
``start_db``, numpy seed ``start_seed``) and counts, clipped vs unclipped,
how many end with loss below ``reached_loss`` and how many are thrown off
(one update longer than ``thrown_step``; a clipped update is at most
``learning_rate * clip_norm`` long). Counts carry a 90% percentile
bootstrap interval over the starts.

All in float64 (``jax.enable_x64``): the wall is steeper than float32 can
resolve.

Run: ``python experiments/fig10_cliff.py [--quick]``.
"""

from __future__ import annotations

import jax
import numpy as np

import exploding as ex
from exploding import plotting

_STARTS = {"start_w": [4.5, 7.5], "start_db": [-0.5, 0.5], "start_seed": 0,
           "reached_loss": 1e-3, "thrown_step": 1.0}
QUICK = {"ws": [2.5, 8.0, 56], "bs": [-6.0, 1.0, 71], "start": [5.5, 0.2],
         "learning_rate": 0.5, "clip_norm": 1.0, "steps": 150,
         "profile_ws": [4.5, 5.0, 5.5, 6.0], "profile_points": 40,
         "starts": 12, **_STARTS}
FULL = {"ws": [2.5, 8.0, 276], "bs": [-6.0, 1.0, 351], "start": [5.5, 0.2],
        "learning_rate": 0.5, "clip_norm": 1.0, "steps": 150,
        "profile_ws": [4.5, 5.0, 5.5, 6.0], "profile_points": 121,
        "starts": 200, **_STARTS}
CACHE_VERSION = 2   # 2: multi-start summary
_RESAMPLES = 2000


def compute(config: dict) -> dict[str, np.ndarray]:
  """Loss surface, two descents and gradient profiles across the wall.

  Args:
    config: ``ws``, ``bs`` (``[lo, hi, n]`` grid axes), ``start`` (``[w0,
      db]``: start at ``b0 = cliff_boundary(w0) + db``), ``learning_rate``,
      ``clip_norm``, ``steps``, ``profile_ws`` (weights whose gradient is
      profiled across the wall), ``profile_points``; the multi-start
      summary: ``starts`` (how many), ``start_w``, ``start_db`` ([lo, hi]),
      ``start_seed``, ``reached_loss``, ``thrown_step``.

  Returns:
    ``ws`` (nw,), ``bs`` (nb,), ``loss``, ``grad_norm`` (nw, nb).
    ``boundary`` (nw,): the wall's b. ``critical_weight``: () w_c.
    ``path_none``, ``path_clip``: (steps + 1, 2) (w, b) of the descents;
    ``loss_none``, ``loss_clip``, ``grad_none``, ``grad_clip``: (steps + 1,)
    loss and raw gradient norm; ``step_none``, ``step_clip``: (steps,)
    norms of the applied updates.
    ``profile_ws`` (n_p,), ``profile_distance`` (n_d,): |b - b_wall|;
    ``profile_above``, ``profile_below``: (n_p, n_d) gradient norm at
    ``b_wall + d`` and ``b_wall - d``.
    ``starts_wb``: (n, 2) the random starts (w0, b0). ``starts_loss``,
    ``starts_longest``: (2, n) final loss and longest update of the
    unclipped (row 0) and clipped (row 1) descent from each start.
    ``reached``, ``thrown``: (2, 3) fraction of starts that end below
    ``reached_loss`` / have an update longer than ``thrown_step``, with
    the 90% bootstrap interval over starts: (value, low, high).
    ``reached_loss``, ``thrown_step``: ().
  """
  with jax.enable_x64(True):
    ws = np.linspace(*config["ws"][:2], int(config["ws"][2]))
    bs = np.linspace(*config["bs"][:2], int(config["bs"][2]))
    loss, grad = ex.cliff.cliff_surface(ws, bs)
    boundary = np.asarray(ex.cliff.cliff_boundary(ws))
    w0, db = config["start"]
    b0 = float(ex.cliff.cliff_boundary(w0)) + db
    runs = {}
    for name, clip in (("none", None), ("clip", config["clip_norm"])):
      d = ex.cliff.cliff_descent(
          w0, b0, learning_rate=config["learning_rate"],
          steps=int(config["steps"]), clip_norm=clip)
      runs[f"path_{name}"] = np.asarray(d.params)
      runs[f"loss_{name}"] = np.asarray(d.loss)
      runs[f"grad_{name}"] = np.asarray(d.grad_norm)
      runs[f"step_{name}"] = np.linalg.norm(np.asarray(d.step), axis=1)
    distance = np.geomspace(1e-12, 1.0, int(config["profile_points"]))
    profile_ws = np.asarray(config["profile_ws"], np.float64)
    above, below = [], []
    for w in profile_ws:
      wall = float(ex.cliff.cliff_boundary(w))
      g = np.asarray(ex.cliff.cliff_surface(
          np.array([w]), np.concatenate([wall + distance, wall - distance]))[1])
      above.append(g[0, :len(distance)])
      below.append(g[0, len(distance):])
    summary = _multi_start(config)
    return {
        **summary,
        "ws": ws, "bs": bs, "loss": np.asarray(loss),
        "grad_norm": np.asarray(grad), "boundary": boundary,
        "critical_weight": np.asarray(ex.cliff.critical_weight()),
        **runs,
        "learning_rate": np.asarray(config["learning_rate"]),
        "clip_norm": np.asarray(config["clip_norm"]),
        "profile_ws": profile_ws, "profile_distance": distance,
        "profile_above": np.asarray(above), "profile_below": np.asarray(below),
    }


def _multi_start(config):
  """Both descents from ``config["starts"]`` random starts near the wall."""
  rng = np.random.default_rng(int(config["start_seed"]))
  n = int(config["starts"])
  w0 = rng.uniform(*config["start_w"], n)
  b0 = (np.asarray(ex.cliff.cliff_boundary(w0), np.float64)
        + rng.uniform(*config["start_db"], n))
  final = np.zeros((2, n))
  longest = np.zeros((2, n))
  for c, clip in enumerate((None, config["clip_norm"])):
    for i in range(n):
      d = ex.cliff.cliff_descent(
          float(w0[i]), float(b0[i]), learning_rate=config["learning_rate"],
          steps=int(config["steps"]), clip_norm=clip)
      final[c, i] = float(d.loss[-1])
      longest[c, i] = float(np.linalg.norm(np.asarray(d.step), axis=1).max())
  reached = final < config["reached_loss"]
  thrown = longest > config["thrown_step"]
  return {
      "starts_wb": np.stack([w0, b0], 1), "starts_loss": final,
      "starts_longest": longest,
      "reached": np.array([_bootstrap_fraction(r) for r in reached]),
      "thrown": np.array([_bootstrap_fraction(t) for t in thrown]),
      "reached_loss": np.asarray(config["reached_loss"], np.float64),
      "thrown_step": np.asarray(config["thrown_step"], np.float64),
  }


def _bootstrap_fraction(flags, level=0.9, seed=0):
  """``(fraction, low, high)``: the percentile bootstrap over starts."""
  flags = np.asarray(flags, np.float64)
  rng = np.random.default_rng(seed)
  boot = flags[rng.integers(0, len(flags), (_RESAMPLES, len(flags)))].mean(1)
  low, high = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
  return flags.mean(), low, high


def plot(results: dict[str, np.ndarray]):
  """(a) loss surface + wall + descents, (b) |grad| across the wall, (c)
  multi-start outcomes, (d, e) loss and gradient norm along the descents,
  (f) final loss against the longest update, per start."""

  from matplotlib.figure import Figure

  ws, bs = results["ws"], results["bs"]
  wc = float(results["critical_weight"])
  c_none, c_clip = plotting.PALETTE[1], plotting.PALETTE[2]
  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 5.0), layout="constrained")
    grid = fig.add_gridspec(2, 3, width_ratios=[1.3, 1, 1])
    ax_map = fig.add_subplot(grid[0, 0])
    ax_prof = fig.add_subplot(grid[0, 1])
    ax_bars = fig.add_subplot(grid[0, 2])
    ax_loss = fig.add_subplot(grid[1, 0])
    ax_grad = fig.add_subplot(grid[1, 1], sharex=ax_loss)
    ax_multi = fig.add_subplot(grid[1, 2])
    image = ax_map.pcolormesh(ws, bs, results["loss"].T, shading="nearest",
                              cmap="viridis", rasterized=True,
                              vmin=0.0, vmax=float(results["loss"].max()))
    cb = fig.colorbar(image, ax=ax_map, pad=0.01)
    cb.set_label("loss $(\\sigma(x_{50}) - 0.7)^2$")
    wall = ws >= wc
    ax_map.plot(ws[wall], results["boundary"][wall], color="w", lw=1.0,
                ls="--", label="wall $b = x_0 - w\\,\\sigma(x_0)$")
    ax_map.plot(ws[~wall], results["boundary"][~wall], color="w", lw=0.8,
                ls=":", label=f"smooth step, $w < w_c$ = {wc:.2f}")
    for name, color, label in (
        ("clip", c_clip, f"clipped, $\\|g\\| \\leq$ "
                         f"{float(results['clip_norm']):g}"),
        ("none", c_none, "unclipped")):
      path = results[f"path_{name}"]
      inside = _inside(path, ws, bs)
      last = int(np.nonzero(inside)[0].max())
      ax_map.plot(path[:last + 1, 0], path[:last + 1, 1], color=color,
                  lw=1.0, marker="o", ms=1.5, label=label)
      if last < len(path) - 1:
        jump = int(np.argmax(results[f"step_{name}"]))
        end = path[-1]
        ax_map.annotate(
            f"step {jump + 1}: |g| = {results[f'grad_{name}'][jump]:.0f},\n"
            f"thrown to (w, b) = ({end[0]:.1f}, {end[1]:.1f}),\n"
            f"stuck at loss {results[f'loss_{name}'][-1]:.3f}",
            xy=(path[last, 0], path[last, 1]), xytext=(ws[0] + 0.25,
                                                       bs[-1] - 0.15),
            fontsize=6, color="w", va="top",
            arrowprops={"arrowstyle": "->", "color": color, "lw": 1.0})
    ax_map.plot(*results["path_none"][0], marker="*", color="w", ms=7,
                ls="none", label="start")
    ax_map.set_xlim(ws[0], ws[-1])
    ax_map.set_ylim(bs[0], bs[-1])
    ax_map.set_xlabel("recurrent weight w")
    ax_map.set_ylabel("bias b")
    ax_map.set_title(f"loss surface (T = 50), GD lr "
                     f"{float(results['learning_rate']):g}")
    ax_map.legend(loc="lower left", fontsize=5.5, frameon=True,
                  facecolor="0.25", edgecolor="0.25", framealpha=0.9,
                  labelcolor="w")

    distance = results["profile_distance"]
    for i, w in enumerate(results["profile_ws"]):
      color = plotting.PALETTE[(0, 5, 3, 4, 2, 1)[i % 6]]
      slope = w * _sigmoid_slope()
      ax_prof.loglog(distance, results["profile_above"][i], color=color,
                     lw=1.0, label=f"w = {w:g} ($w\\sigma'$ = {slope:.2f})")
      ax_prof.loglog(distance, results["profile_below"][i], color=color,
                     lw=0.8, ls="--")
      ax_prof.axhline(slope ** 50, color=color, lw=0.5, ls=":")
      peak = float(np.nanmax(np.r_[results["profile_above"][i],
                                   results["profile_below"][i]]))
      ax_prof.annotate(f"{peak:.2g}", (distance[np.nanargmax(
          results["profile_above"][i])], peak), xytext=(2, 1),
          textcoords="offset points", fontsize=5.5, color=color)
    ax_prof.set_xlabel("distance to the wall $|b - b_{wall}(w)|$")
    ax_prof.set_ylabel("gradient norm $\\|\\nabla_{w,b} L\\|$")
    ax_prof.set_title("|gradient| across the wall")
    ax_prof.text(0.98, 0.97, "dotted: $(w\\sigma'(x_0))^{T}$", ha="right",
                 va="top", transform=ax_prof.transAxes, fontsize=5.5)
    ax_prof.legend(loc="lower left", fontsize=5.5,
                   title="solid: above, dashed: below", title_fontsize=5.5)

    steps = np.arange(len(results["loss_none"]))
    for name, color, label in (("none", c_none, "unclipped"),
                               ("clip", c_clip, "clipped")):
      ax_loss.semilogy(steps, np.maximum(results[f"loss_{name}"], 1e-8),
                       color=color, lw=1.0,
                       label=f"{label}: final "
                       f"{results[f'loss_{name}'][-1]:.1g}")
      ax_grad.semilogy(steps, np.maximum(results[f"grad_{name}"], 1e-8),
                       color=color, lw=0.9, label=label)
    clip = float(results["clip_norm"])
    ax_grad.axhline(clip, color="0.3", lw=0.6, ls="--")
    ax_grad.text(steps[-1], clip * 1.6, f"clip threshold {clip:g}",
                 ha="right", fontsize=5.5, color="0.3")
    jump = int(np.argmax(results["step_none"]))
    ax_grad.annotate(f"$\\|g\\|$ = {results['grad_none'][jump]:.0f}",
                     (jump, results["grad_none"][jump]), xytext=(6, -4),
                     textcoords="offset points", fontsize=5.5, color=c_none)
    ax_loss.set_ylim(1e-6, 1.0)
    ax_loss.set_ylabel("loss")
    ax_loss.set_xlabel("GD step")
    ax_loss.set_title("loss along the descent from the star")
    ax_loss.legend(loc="lower left", fontsize=5.5)
    ax_grad.set_ylim(1e-8, 1e3)
    ax_grad.set_ylabel("raw $\\|\\nabla L\\|$")
    ax_grad.set_xlabel("GD step")
    ax_grad.set_title("|gradient| along the descent")

    _plot_outcomes(ax_bars, results, c_none, c_clip)
    _plot_multi_start(ax_multi, results, c_none, c_clip)
    axes = [ax_map, ax_prof, ax_bars, ax_loss, ax_grad, ax_multi]
    plotting.label_panels(axes)
  return fig


def _plot_outcomes(ax, results, c_none, c_clip):
  """Fractions of starts that reach the minimum / are thrown off."""
  n = results["starts_loss"].shape[1]
  reached = float(results["reached_loss"])
  thrown = float(results["thrown_step"])
  groups = (("reached", f"end with loss\n< {reached:.0e}"),
            ("thrown", f"thrown off (one\nupdate > {thrown:g})"))
  for c, (name, color) in enumerate((("unclipped", c_none),
                                     ("clipped", c_clip))):
    x = np.arange(len(groups)) + (c - 0.5) * 0.38
    value, low, high = (np.array([results[k][c][j] for k, _ in groups])
                        for j in range(3))
    ax.bar(x, 100 * value, width=0.36, color=color, label=name)
    ax.errorbar(x, 100 * value, yerr=100 * np.stack([value - low,
                                                     high - value]),
                fmt="none", ecolor="k", elinewidth=0.8, capsize=2)
    for xi, v in zip(x, value):
      ax.text(xi, 100 * v + 6, f"{round(v * n)}", ha="center", fontsize=6,
              color=color)
  ax.set_xticks(np.arange(len(groups)), [label for _, label in groups],
                fontsize=6.5)
  ax.set_ylim(0, 100)
  ax.set_ylabel(f"% of {n} random starts")
  ax.set_title("where the descent ends")
  ax.legend(loc="upper left", fontsize=6)
  ax.text(0.03, 0.78, f"starts: $w_0$ in {_span(results['starts_wb'][:, 0])}"
          f", $b_0$ within\n0.5 of the wall; bars: 90% bootstrap\n"
          f"interval over starts", transform=ax.transAxes, va="top",
          fontsize=5.5, color="0.3")


def _span(values):
  """``"[lo, hi]"``: the range of ``values`` out to multiples of 0.5."""
  lo, hi = np.floor(values.min() * 2) / 2, np.ceil(values.max() * 2) / 2
  return f"[{lo:g}, {hi:g}]"


def _plot_multi_start(ax, results, c_none, c_clip):
  """Final loss against the longest update, one point per start and run."""
  floor = 1e-12
  cap = float(results["learning_rate"] * results["clip_norm"])
  for c, (name, color, marker) in enumerate((("unclipped", c_none, "o"),
                                             ("clipped", c_clip, "^"))):
    ax.loglog(results["starts_longest"][c],
              np.maximum(results["starts_loss"][c], floor), ls="none",
              marker=marker, ms=2.5, alpha=0.5, mew=0, color=color,
              label=name)
  ax.axhline(float(results["reached_loss"]), color="0.4", lw=0.6, ls="--")
  ax.axvline(float(results["thrown_step"]), color="0.4", lw=0.6, ls="--")
  ax.axvline(cap, color=c_clip, lw=0.6, ls=":")
  ax.text(cap / 1.3, 3e-12, f"clipped update\n$\\leq$ lr$\\cdot$c = {cap:g}",
          fontsize=5.5, color=c_clip, ha="right", va="bottom")
  ax.text(float(results["thrown_step"]) * 1.5, 3e-12, "thrown off",
          fontsize=5.5, color="0.3", va="bottom")
  ax.set_ylim(floor / 3, 3.0)
  ax.set_xlabel("longest single update $\\|\\Delta(w, b)\\|$")
  ax.set_ylabel("final loss (after 150 GD steps)")
  ax.set_title("each start, both descents")
  ax.legend(loc="center right", fontsize=6)


def _sigmoid_slope(x0: float = 0.5) -> float:
  s = 1.0 / (1.0 + np.exp(-x0))
  return s * (1.0 - s)


def _inside(path, ws, bs):
  return ((path[:, 0] >= ws[0]) & (path[:, 0] <= ws[-1])
          & (path[:, 1] >= bs[0]) & (path[:, 1] <= bs[-1]))


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
