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

All in float64 (``jax.enable_x64``): the wall is steeper than float32 can
resolve.

Run: ``python experiments/fig10_cliff.py [--quick]``.
"""

from __future__ import annotations

import jax
import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"ws": [2.5, 8.0, 56], "bs": [-6.0, 1.0, 71], "start": [5.5, 0.2],
         "learning_rate": 0.5, "clip_norm": 1.0, "steps": 150,
         "profile_ws": [4.5, 5.0, 5.5, 6.0], "profile_points": 40}
FULL = {"ws": [2.5, 8.0, 276], "bs": [-6.0, 1.0, 351], "start": [5.5, 0.2],
        "learning_rate": 0.5, "clip_norm": 1.0, "steps": 150,
        "profile_ws": [4.5, 5.0, 5.5, 6.0], "profile_points": 121}
CACHE_VERSION = 1


def compute(config: dict) -> dict[str, np.ndarray]:
  """Loss surface, two descents and gradient profiles across the wall.

  Args:
    config: ``ws``, ``bs`` (``[lo, hi, n]`` grid axes), ``start`` (``[w0,
      db]``: start at ``b0 = cliff_boundary(w0) + db``), ``learning_rate``,
      ``clip_norm``, ``steps``, ``profile_ws`` (weights whose gradient is
      profiled across the wall), ``profile_points``.

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
    return {
        "ws": ws, "bs": bs, "loss": np.asarray(loss),
        "grad_norm": np.asarray(grad), "boundary": boundary,
        "critical_weight": np.asarray(ex.cliff.critical_weight()),
        **runs,
        "learning_rate": np.asarray(config["learning_rate"]),
        "clip_norm": np.asarray(config["clip_norm"]),
        "profile_ws": profile_ws, "profile_distance": distance,
        "profile_above": np.asarray(above), "profile_below": np.asarray(below),
    }


def plot(results: dict[str, np.ndarray]):
  """(a) loss surface + wall + descents, (b) |grad| across the wall, (c)
  loss and gradient norm along the descents."""

  from matplotlib.figure import Figure

  ws, bs = results["ws"], results["bs"]
  wc = float(results["critical_weight"])
  c_none, c_clip = plotting.PALETTE[1], plotting.PALETTE[2]
  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 3.1), layout="constrained")
    grid = fig.add_gridspec(2, 3, width_ratios=[1.4, 1, 1])
    ax_map = fig.add_subplot(grid[:, 0])
    ax_prof = fig.add_subplot(grid[:, 1])
    ax_loss = fig.add_subplot(grid[0, 2])
    ax_grad = fig.add_subplot(grid[1, 2], sharex=ax_loss)
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
                                                       bs[-1] - 0.9),
            fontsize=6, color="w",
            arrowprops={"arrowstyle": "->", "color": color, "lw": 1.0})
    ax_map.plot(*results["path_none"][0], marker="*", color="w", ms=7,
                ls="none", label="start")
    ax_map.set_xlim(ws[0], ws[-1])
    ax_map.set_ylim(bs[0], bs[-1])
    ax_map.set_xlabel("recurrent weight w")
    ax_map.set_ylabel("bias b")
    ax_map.set_title(f"loss surface (T = 50), SGD lr "
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
                       label=f"{label}: final {results[f'loss_{name}'][-1]:.1g}")
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
    ax_loss.set_title("along the descent")
    ax_loss.legend(loc="lower left", fontsize=5.5)
    ax_loss.tick_params(labelbottom=False)
    ax_grad.set_ylim(1e-8, 1e3)
    ax_grad.set_ylabel("raw $\\|\\nabla L\\|$")
    ax_grad.set_xlabel("SGD step")
    axes = [ax_map, ax_prof, ax_loss, ax_grad]
    plotting.label_panels(axes)
  return fig


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
