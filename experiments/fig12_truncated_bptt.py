"""Truncated BPTT: a window of k steps cannot learn a lag L >= k; at g > 1 a
longer window lets more explosion through.

Truncated backpropagation through time with window k (``ex.train.train(...,
truncation=k)``; Williams & Peng 1990) stops the gradient every k steps, so
the loss at the last step reaches back exactly k transitions:
``dL/dh_(T-lag)`` is exactly zero for ``lag >= k`` (panels a, d). Delayed
recall with lag L asks for the input ``L`` steps before the last, which
first appears in the state ``h_(T-L)``: a window ``k <= L`` gives that state
exactly zero gradient (``k = L`` included, shaded), so the input weights
are never trained to write the value; ``k > L`` reaches it (panels b, e).
Windows ``k < L`` stay at the constant baseline. ``k = L`` learns part of
the task: its first transition reads ``h_(T-L)``, so the recurrent weights
get the term ``dL/dh_(T-L+1) h_(T-L)^T`` and can learn to carry what the
untrained input weights wrote.

The second row repeats the sweep at recurrent gain ``g > 1`` (fig11's 1.25),
where the backpropagated gradient grows with the lag: every step of window
adds explosion. The raw gradient norm and the share of updates that hit the
clip threshold grow with k (panel c), and full BPTT loses seeds that a
window just above L keeps: the trade-off between reaching the lag and
letting the explosion through.

Every run uses one compiled program (window, gain, lags are traced
arguments): tanh RNN, SGD on fresh batches, clip by norm (threshold 1).
Per-seed values are drawn as points; numbers quote the median over seeds
with the seeds' [min, max].

Run: ``python experiments/fig12_truncated_bptt.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"train": {"hidden": 16, "length": 20, "lag": 8, "steps": 300,
                   "batch": 32, "seeds": 4},
         "truncations": [1, 4, 8, 9, 12, 20],
         "horizon_truncations": [1, 4, 8, 20],
         "weight_scales": [1.0, 1.25], "learning_rate": 0.3,
         "norm_threshold": 1.0, "key": 0}
FULL = {"train": {"hidden": 32, "length": 40, "lag": 16, "steps": 1000,
                  "batch": 32, "seeds": 6},
        "truncations": [1, 8, 15, 16, 17, 24, 40],
        "horizon_truncations": [1, 8, 16, 24, 40],
        "weight_scales": [1.0, 1.25], "learning_rate": 0.3,
        "norm_threshold": 1.0, "key": 0}
CACHE_VERSION = 2   # 2: a g > 1 row, raw gradient norms, k <= L shaded
_LOSS_RANGE = (1e-3, 1.5)


def compute(config: dict) -> dict[str, np.ndarray]:
  """Gradient horizon, final loss and raw gradient norm per gain and window.

  Args:
    config: ``train`` (hidden, length T, lag L, steps, batch, seeds),
      ``truncations`` (windows k; k = T is full BPTT),
      ``horizon_truncations`` (the k drawn in panels a, d; among
      ``truncations``), ``weight_scales`` (gains g, one row each),
      ``learning_rate``, ``norm_threshold``, ``key``.

  Returns:
    ``truncations``: (n_k,). ``weight_scales``: (n_g,). ``lag_grad_norm``:
    (n_g, n_k, T) median over seeds of the mean over the first 10% of steps
    of ``||dL/dh_(T-lag)||``, lag = 0..T-1. ``final_loss``: (n_g, n_k,
    seeds) mean loss over the last 10% of steps. ``raw_norm``: (n_g, n_k,
    seeds) median over steps of the raw (pre-clip) gradient norm;
    ``clipped_fraction``: (n_g, n_k, seeds) share of steps whose raw norm
    exceeds the threshold. ``loss_curves``: (n_g, n_k, steps) median over
    seeds. ``nan_runs``: (n_g, n_k) seeds that went non-finite.
    ``baseline_loss``, ``lag``, ``length``, ``norm_threshold``: ().
  """
  t = config["train"]
  length, steps = int(t["length"]), int(t["steps"])
  window = max(1, steps // 10)
  out = {k: [] for k in ("lag_grad_norm", "final_loss", "raw_norm",
                         "clipped_fraction", "loss_curves", "nan_runs")}
  baseline = np.nan
  for g in config["weight_scales"]:
    rows = {k: [] for k in out}
    for k in config["truncations"]:
      r = ex.train.train(
          "recall", model="rnn", activation="tanh", hidden=int(t["hidden"]),
          steps=steps, batch=int(t["batch"]), length=length,
          lag=int(t["lag"]), seeds=int(t["seeds"]), optimizer="sgd",
          learning_rate=config["learning_rate"], weight_scale=float(g),
          clip="norm", threshold=config["norm_threshold"],
          truncation=int(k), lags=tuple(range(length)),
          key=int(config["key"]))
      lag_norm = np.asarray(r.lag_grad_norm)          # (seeds, steps, T)
      loss = np.asarray(r.loss)                       # (seeds, steps)
      pre = np.asarray(r.pre_norm)                    # (seeds, steps)
      rows["lag_grad_norm"].append(np.median(lag_norm[:, :window].mean(1),
                                             0))
      rows["final_loss"].append(loss[:, -window:].mean(1))
      rows["raw_norm"].append(np.median(pre, 1))
      rows["clipped_fraction"].append(
          np.mean(pre > config["norm_threshold"], 1))
      rows["loss_curves"].append(np.median(loss, 0))
      rows["nan_runs"].append(int(np.sum(np.asarray(r.nan_step) >= 0)))
      baseline = r.config["baseline_loss"]
    for k in out:
      out[k].append(rows[k])
  return {
      **{k: np.asarray(v) for k, v in out.items()},
      "truncations": np.asarray(config["truncations"], np.int64),
      "horizon_truncations": np.asarray(config["horizon_truncations"],
                                        np.int64),
      "weight_scales": np.asarray(config["weight_scales"], np.float64),
      "baseline_loss": np.asarray(baseline),
      "lag": np.asarray(int(t["lag"])),
      "length": np.asarray(length),
      "norm_threshold": np.asarray(config["norm_threshold"], np.float64),
  }


def plot(results: dict[str, np.ndarray]):
  """Per gain (rows): (a, d) ||dL/dh_(T-lag)|| vs lag, (b, e) final loss vs
  k; (c) raw gradient norm and (f) share of clipped steps vs k, both gains.
  """
  fig, axes = plotting.new_figure(2, 3, width="full", height=4.9)
  gains = results["weight_scales"]
  colors = [plotting.PALETTE[0], plotting.PALETTE[1], plotting.PALETTE[2]]
  with plotting.paper_style():
    for row, g in enumerate(gains[:2]):
      _plot_horizon(axes[row, 0], results, row)
      _plot_final_loss(axes[row, 1], results, row, colors[row])
    _plot_against_k(axes[0, 2], results, "raw_norm", colors, log=True)
    axes[0, 2].axhline(float(results["norm_threshold"]), color="0.4", lw=0.6,
                       ls="--")
    axes[0, 2].text(1, float(results["norm_threshold"]) * 1.08,
                    "clip threshold", fontsize=5.5, color="0.3", va="bottom")
    axes[0, 2].set_ylabel("raw $\\|g\\|$ (median over steps)")
    axes[0, 2].set_title("explosion let through")
    _plot_against_k(axes[1, 2], results, "clipped_fraction", colors,
                    log=False, scale=100)
    axes[1, 2].set_ylabel("% of steps clipped")
    axes[1, 2].set_title("updates that hit the threshold")
    axes[1, 2].set_ylim(0, 100)
    plotting.label_panels(axes)
  return fig


def _plot_horizon(ax, results, row):
  """||dL/dh_(T-lag)|| early in training against lag, for chosen windows."""
  ks = results["truncations"]
  length, lag = int(results["length"]), int(results["lag"])
  lags = np.arange(length)
  palette = [plotting.PALETTE[i] for i in (1, 3, 0, 2, 4, 5)]
  norms = results["lag_grad_norm"][row]
  positive = norms[norms > 0]
  floor = positive.min() / 30 if positive.size else 1e-8
  for c, k in enumerate(results["horizon_truncations"]):
    i = int(np.nonzero(ks == k)[0][0])
    color = palette[c % len(palette)]
    nonzero = norms[i] > 0
    ax.semilogy(lags[nonzero], norms[i][nonzero], color=color, marker="o",
                ms=1.8, lw=0.9)
    if k >= length:
      ax.text(lags[-1], norms[i][-1] * 1.5, "full BPTT", ha="right",
              va="bottom", fontsize=5.5, color=color)
      continue
    # Every window agrees with full BPTT below lag k; its zeros (lag >= k)
    # get a row of markers, labelled with k.
    height = floor / 1.7 ** c
    ax.plot(lags[~nonzero], np.full((~nonzero).sum(), height), ls="none",
            marker="v", ms=2.2, color=color)
    ax.text(k - 0.8, height, f"k = {k}", ha="right", va="center",
            fontsize=5, color=color)
  ax.axhline(floor * 1.6, color="0.6", lw=0.5)
  ax.text(-0.5, floor * 2.0, "below: exactly 0", ha="left", fontsize=5.5,
          color="0.3")
  ax.axvline(lag, color="0.4", lw=0.6, ls="--")
  ax.text(lag + 0.4, floor * 6, f"$h_{{T-L}}$ (L = {lag}):\nfirst holds "
          f"the\nrecalled value", fontsize=5.5, va="bottom", color="0.3")
  ax.set_xlabel("lag (steps before the end)")
  ax.set_ylabel("$\\|\\partial L / \\partial h_{T-lag}\\|$ "
                "(first 10% of steps)")
  ax.set_title(f"gradient horizon, g = {results['weight_scales'][row]:g}")
  ax.set_xlim(-6 if length >= 30 else -3, length)


def _plot_final_loss(ax, results, row, color):
  """Final loss per seed against k, k <= L shaded."""
  ks = results["truncations"]
  lag, length = int(results["lag"]), int(results["length"])
  final = results["final_loss"][row]
  base = float(results["baseline_loss"])
  ax.plot(np.repeat(ks[:, None], final.shape[1], 1).ravel(), final.ravel(),
          ls="none", marker="o", ms=2, alpha=0.45, color=color)
  ax.plot(ks, np.median(final, 1), color=color, lw=1.2, marker="s", ms=3,
          label="median; points: seeds")
  ax.axhline(base, color="0.4", lw=0.7, ls=":",
             label=f"predict the mean ({base:.3f})")
  ax.axvspan(0, lag + 0.5, color="0.9", zorder=0)
  ax.text(0.03, 0.97, f"k $\\leq$ L = {lag}:\n$\\partial L/\\partial "
          f"h_{{T-L}}$ = 0\nexactly",
          transform=ax.transAxes, fontsize=5.5, color="0.3", va="top")
  ax.set_xlim(0, ks.max() + 1)
  ax.set_yscale("log")
  ax.set_ylim(_LOSS_RANGE)
  ax.set_xlabel("truncation window k (steps)")
  ax.set_ylabel("final loss (MSE, last 10% of steps)")
  ax.set_title(f"final loss vs window, g = {results['weight_scales'][row]:g}")
  lines = []
  for k in (lag, lag + 1, length):
    if (ks == k).any():
      name = "full BPTT" if k >= length else f"k = {k}"
      lines.append(f"{name}: {_median_range(final[ks == k][0])}")
  best = int(np.argmin(np.median(final, 1)))
  if ks[best] not in (lag, lag + 1, length):
    lines.append(f"k = {ks[best]}: {_median_range(final[best])}")
  ax.text(0.97, 0.03, "median [min, max] over "
          f"{final.shape[1]} seeds:\n" + "\n".join(lines),
          transform=ax.transAxes, ha="right", va="bottom", fontsize=5.5)
  ax.legend(loc="upper left", bbox_to_anchor=(0.47, 1.0), fontsize=5.5)


def _plot_against_k(ax, results, key, colors, *, log, scale=1.0):
  """A per-seed quantity against k, one colour per gain."""
  ks = results["truncations"]
  lag = int(results["lag"])
  for row, g in enumerate(results["weight_scales"]):
    values = scale * results[key][row]
    color = colors[row % len(colors)]
    ax.plot(np.repeat(ks[:, None], values.shape[1], 1).ravel(),
            values.ravel(), ls="none", marker="o", ms=2, alpha=0.45,
            color=color)
    ax.plot(ks, np.median(values, 1), color=color, lw=1.2, marker="s", ms=3,
            label=f"g = {g:g}")
  ax.axvspan(0, lag + 0.5, color="0.9", zorder=0)
  ax.set_xlim(0, ks.max() + 1)
  if log:
    ax.set_yscale("log")
  ax.set_xlabel("truncation window k (steps)")
  ax.legend(loc="upper left", fontsize=6, title="median, points: seeds",
            title_fontsize=5.5)


def _median_range(values):
  """``"median [min, max]"`` over seeds."""
  return (f"{np.median(values):.3g} [{np.min(values):.3g}, "
          f"{np.max(values):.3g}]")


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
