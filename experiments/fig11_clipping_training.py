"""Gradient clipping in training, compared fairly: each method at its best.

A tanh RNN with recurrent gain ``g = 1.25`` (held fixed; ``W0`` is trained)
learns delayed recall (output the value seen ``lag`` steps before the end)
with SGD on fresh batches. Unclipped, its gradient norm grows by orders of
magnitude within a few dozen updates at a learning rate of 0.1 or more, and
one update overflows the parameters (NaN). Clipping each gradient entry
(``clip by value``) or the global norm (``clip by norm``, Pascanu et al.
2013, Algorithm 1) bounds the update; how well each then learns depends on
the threshold and the learning rate together (the update is at most ``lr *
threshold`` long for norm clipping), so one setting per method says little.

The comparison here: every method over a learning-rate x threshold grid
(no clipping over the learning rates alone), ``seeds`` runs per cell (key
``key``); per method the cell with the lowest median final loss is chosen,
then re-run on fresh seeds (keys ``fresh_keys``), and those runs give the
quoted numbers, free of the selection's optimism. Panel (a) is the grid,
(b-c) the fresh runs, (d) how far clipping by value turns the update: the
cosine between the clipped and the raw gradient, median over steps, per
seed (clipping by norm only rescales: cosine 1).

"No clipping" is run as ``clip="norm"`` with the threshold at the largest
float32, which never triggers on a finite gradient (``ex.clipping`` returns
a gradient within its threshold unchanged, bit for bit): the same compiled
program as the clip-by-norm runs, one compile fewer. Each cell is one
``ex.train.train`` call, seeds vmapped inside; learning rate and threshold
are traced, so the grid reuses two compiled programs (value, norm).

Run: ``python experiments/fig11_clipping_training.py [--quick]``.
"""

from __future__ import annotations

import warnings

import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"train": {"hidden": 16, "length": 20, "lag": 8, "steps": 300,
                   "batch": 32, "seeds": 3},
         "weight_scale": 1.25, "learning_rates": [0.1, 0.3],
         "thresholds": {"value": [0.01, 0.03], "norm": [0.3, 1.0]},
         "fresh_keys": [1], "key": 0}
FULL = {"train": {"hidden": 32, "length": 40, "lag": 16, "steps": 1000,
                  "batch": 32, "seeds": 3},
        "weight_scale": 1.25, "learning_rates": [0.03, 0.1, 0.3],
        "thresholds": {"value": [0.01, 0.03, 0.1], "norm": [0.3, 1.0, 3.0]},
        "fresh_keys": [1, 2, 3], "key": 0}
METHODS = ("none", "value", "norm")
# Runs that went non-finite (no clipping at a large learning rate) have NaN
# records and count as infinitely bad in the medians.
ALLOW_NONFINITE = {"grid_final", "grid_cosine", "grid_update", "loss",
                   "pre_norm", "post_norm", "cosine", "final",
                   "final_estimate", "cosine_estimate"}
CACHE_VERSION = 2   # 2: learning-rate x threshold grid, fresh-seed re-runs
_NEVER = float(np.finfo(np.float32).max)
_RESAMPLES = 2000


def compute(config: dict) -> dict[str, np.ndarray]:
  """The grid, then each method's best cell on fresh seeds.

  Args:
    config: ``train`` (hidden, length, lag, steps, batch, seeds per call),
      ``weight_scale``, ``learning_rates``, ``thresholds`` ({"value": [...],
      "norm": [...]}), ``fresh_keys`` (keys of the re-runs), ``key``.

  Returns:
    ``learning_rates``: (n_lr,). ``columns``: (n_c,) thresholds, column 0
    "none" (the largest float32), then value's, then norm's;
    ``column_method``: (n_c,) index into ``METHODS``. ``grid_final``: (n_lr,
    n_c, seeds) mean loss over the last 10% of steps (NaN for a run that
    went non-finite);
    ``grid_nan``: (n_lr, n_c) runs that did; ``grid_cosine``,
    ``grid_update``: (n_lr, n_c, seeds) median over steps of the cosine
    between clipped and raw gradient and of the update length ``lr *
    ||clipped g||``. ``best``: (3, 2) the (lr, column) index chosen per
    method. ``loss``, ``pre_norm``, ``post_norm``, ``cosine``: (3,
    fresh seeds, steps) the best cells re-run on fresh seeds, rows in
    ``METHODS`` order. ``final``: (3, fresh seeds); ``final_estimate``: (3,
    3) its median with the 90% bootstrap interval over seeds (value, low,
    high); ``cosine_estimate``: (3, 3) the same for the per-seed median
    cosine; ``nan_step``: (3, fresh seeds). ``baseline_loss``, ``lag``,
    ``weight_scale``: ().
  """
  lrs = [float(x) for x in config["learning_rates"]]
  columns = ([(0, _NEVER)]
             + [(1, float(c)) for c in config["thresholds"]["value"]]
             + [(2, float(c)) for c in config["thresholds"]["norm"]])
  seeds = int(config["train"]["seeds"])
  shape = (len(lrs), len(columns), seeds)
  final, cosine, update = (np.full(shape, np.nan) for _ in range(3))
  nans = np.zeros(shape[:2], np.int64)
  baseline = np.nan
  for i, lr in enumerate(lrs):
    for j, (method, threshold) in enumerate(columns):
      r = _run(config, METHODS[method], threshold, lr, config["key"])
      final[i, j], cosine[i, j], update[i, j] = _summaries(r, lr)
      nans[i, j] = int(np.sum(np.asarray(r.nan_step) >= 0))
      baseline = r.config["baseline_loss"]

  method_of = np.array([m for m, _ in columns])
  score = np.where(np.isnan(final), np.inf, final)
  median = np.median(score, -1)
  best = []
  records = {k: [] for k in ("loss", "pre_norm", "post_norm", "cosine",
                             "nan_step")}
  for m in range(len(METHODS)):
    masked = np.where(method_of[None, :] == m, median, np.inf)
    i, j = np.unravel_index(np.argmin(masked), masked.shape)
    best.append((i, j))
    runs = [_run(config, METHODS[m], columns[j][1], lrs[i], key)
            for key in config["fresh_keys"]]
    for k in records:
      records[k].append(np.concatenate([np.asarray(getattr(r, k))
                                        for r in runs]))
  out = {k: np.stack(v) for k, v in records.items()}
  window = max(1, out["loss"].shape[-1] // 10)
  fresh_final = np.where(out["nan_step"] >= 0, np.nan,
                         out["loss"][..., -window:].mean(-1))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN: no clipping
    fresh_cos = np.nanmedian(out["cosine"], -1)
  return {
      **out,
      "learning_rates": np.asarray(lrs),
      "columns": np.array([c for _, c in columns]),
      "column_method": method_of,
      "grid_final": final, "grid_nan": nans, "grid_cosine": cosine,
      "grid_update": update, "best": np.asarray(best, np.int64),
      "final": fresh_final,
      "final_estimate": np.array([_median_interval(f) for f in fresh_final]),
      "cosine_estimate": np.array([_median_interval(c) for c in fresh_cos]),
      "baseline_loss": np.asarray(baseline),
      "lag": np.asarray(config["train"]["lag"]),
      "weight_scale": np.asarray(config["weight_scale"]),
  }


def _run(config, method, threshold, learning_rate, key):
  """One grid cell: ``seeds`` runs of delayed recall."""
  t = config["train"]
  return ex.train.train(
      "recall", model="rnn", activation="tanh", hidden=int(t["hidden"]),
      steps=int(t["steps"]), batch=int(t["batch"]), length=int(t["length"]),
      lag=int(t["lag"]), seeds=int(t["seeds"]), optimizer="sgd",
      learning_rate=learning_rate, weight_scale=config["weight_scale"],
      clip="value" if method == "value" else "norm",
      threshold=_NEVER if method == "none" else threshold, lags=(),
      key=int(key))


def _summaries(r, learning_rate):
  """Per seed: final loss (NaN if the run failed), median cosine, median
  update length."""
  loss = np.asarray(r.loss)
  window = max(1, loss.shape[-1] // 10)
  failed = np.asarray(r.nan_step) >= 0
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return (np.where(failed, np.nan, loss[:, -window:].mean(1)),
            np.where(failed, np.nan, np.nanmedian(np.asarray(r.cosine), 1)),
            np.where(failed, np.nan, learning_rate
                     * np.nanmedian(np.asarray(r.post_norm), 1)))


def _median_interval(values, level=0.9, seed=0):
  """``(median, low, high)`` over seeds: percentile bootstrap of the median
  (a NaN seed, a failed run, counts as worse than every finite one)."""
  x = np.where(np.isnan(values), np.inf, np.asarray(values, np.float64))
  rng = np.random.default_rng(seed)
  boot = np.median(x[rng.integers(0, len(x), (_RESAMPLES, len(x)))], 1)
  # No interpolation between resamples: they may be inf.
  low = np.percentile(boot, 50 * (1 - level), method="lower")
  high = np.percentile(boot, 50 * (1 + level), method="higher")
  return np.median(x), low, high


def plot(results: dict[str, np.ndarray]):
  """(a) the grid, (b) loss of the best cells on fresh seeds, (c) their
  raw gradient norm, (d) the cosine of clip by value across the grid."""
  from matplotlib.figure import Figure

  colors = {"none": plotting.PALETTE[1], "value": plotting.PALETTE[0],
            "norm": plotting.PALETTE[2]}
  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 5.0), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1])
    ax_grid = fig.add_subplot(grid[0, 0])
    ax_loss = fig.add_subplot(grid[0, 1])
    ax_norm = fig.add_subplot(grid[1, 0])
    ax_cos = fig.add_subplot(grid[1, 1])
    _plot_grid(fig, ax_grid, results, colors)
    _plot_fresh(ax_loss, ax_norm, results, colors)
    _plot_cosine(ax_cos, results, colors)
    fig.suptitle(
        f"Delayed recall (lag {int(results['lag'])}), tanh RNN with g = "
        f"{float(results['weight_scale']):g}, SGD: each clipping method at "
        f"its best learning rate x threshold", fontsize=7, x=0.01,
        ha="left")
    plotting.label_panels([ax_grid, ax_loss, ax_norm, ax_cos])
  return fig


def _names(results):
  """Column labels and each method's best setting, as text."""
  labels = []
  for c, m in zip(results["columns"], results["column_method"]):
    labels.append("none" if METHODS[m] == "none"
                  else f"{METHODS[m]}\n{c:g}")
  best = {}
  for m, method in enumerate(METHODS):
    i, j = results["best"][m]
    lr = results["learning_rates"][i]
    c = results["columns"][j]
    best[method] = (f"no clipping, lr {lr:g}" if method == "none"
                    else f"clip by {method} {c:g}, lr {lr:g}")
  return labels, best


def _plot_grid(fig, ax, results, colors):
  """Median final loss per cell, failed runs counted, best cells boxed."""
  from matplotlib import colors as mcolors
  from matplotlib.patches import Rectangle

  final = results["grid_final"]
  lrs = results["learning_rates"]
  n_lr, n_c, seeds = final.shape
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    median = np.median(np.where(np.isnan(final), np.inf, final), -1)
  base = float(results["baseline_loss"])
  shown = np.where(np.isfinite(median), median, np.nan)
  image = ax.imshow(np.ma.masked_invalid(np.log10(shown)), origin="lower",
                    aspect="auto", cmap="viridis_r",
                    norm=mcolors.Normalize(np.log10(0.02), np.log10(1.0)))
  labels, _ = _names(results)
  for i in range(n_lr):
    for j in range(n_c):
      nan = int(results["grid_nan"][i, j])
      if nan == seeds:
        text, color = f"NaN\n{nan}/{seeds}", "k"
      else:
        m = median[i, j]
        lo, hi = np.nanmin(final[i, j]), np.nanmax(final[i, j])
        text = f"{m:.3f}" if np.isfinite(m) else "NaN"
        text += f"\n{lo:.3f}-{hi:.3f}"
        if nan:
          text += f"\n{nan}/{seeds} NaN"
        color = "w" if np.isfinite(m) and m > 0.12 else "k"
      ax.text(j, i, text, ha="center", va="center", fontsize=4.8,
              color=color)
  for m, method in enumerate(METHODS):
    i, j = results["best"][m]
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                           edgecolor=colors[method], lw=2.0))
  for x in (0.5, 0.5 + np.sum(results["column_method"] == 1)):
    ax.axvline(x, color="w", lw=1.5)
  ax.set_xticks(range(n_c), labels, fontsize=6)
  ax.set_yticks(range(n_lr), [f"{lr:g}" for lr in lrs])
  ax.set_ylabel("learning rate")
  ax.set_xlabel("clipping method and threshold")
  ax.set_title(f"final loss: median, min-max over {seeds} seeds "
               f"(boxed: best per method)")
  cb = fig.colorbar(image, ax=ax, pad=0.01)
  cb.set_label("log$_{10}$ median final loss")
  cb.ax.axhline(np.log10(base), color="r", lw=1.0)
  cb.ax.text(1.3, np.log10(base), f"baseline\n{base:.3f}", fontsize=5,
             va="center", transform=cb.ax.get_yaxis_transform())


def _plot_fresh(ax_loss, ax_norm, results, colors):
  """Loss and raw gradient norm of each method's best cell, fresh seeds."""
  _, best = _names(results)
  steps = np.arange(results["loss"].shape[-1])
  n = results["loss"].shape[1]
  for m, method in enumerate(METHODS):
    color = colors[method]
    loss, pre = results["loss"][m], results["pre_norm"][m]
    for s in range(n):
      if np.all(np.isfinite(loss[s])):
        ax_loss.semilogy(steps, _smooth(loss[s]), color=color, lw=0.4,
                         alpha=0.35)
        ax_norm.semilogy(steps, _smooth(pre[s]), color=color, lw=0.4,
                         alpha=0.35)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      ax_loss.semilogy(steps, _smooth(np.nanmedian(loss, 0)), color=color,
                       lw=1.2, label=f"{best[method]}:\n  final "
                       f"{_estimate(results['final_estimate'][m], n)}")
      ax_norm.semilogy(steps, _smooth(np.nanmedian(pre, 0)), color=color,
                       lw=1.2)
      if method != "none":
        ax_norm.semilogy(steps, _smooth(np.nanmedian(
            results["post_norm"][m], 0)), color=color, lw=0.9, ls="--")
  ax_loss.axhline(float(results["baseline_loss"]), color="0.4", lw=0.7,
                  ls=":", label="predict the mean (baseline)")
  ax_loss.set_ylim(5e-5, 2.0)
  ax_loss.set_xlabel("SGD step")
  ax_loss.set_ylabel("batch loss (MSE)")
  ax_loss.set_title(f"best cells re-run on {n} fresh seeds")
  ax_loss.legend(loc="lower left", fontsize=5.3,
                 title="median [90% bootstrap], failed runs count as worst",
                 title_fontsize=5.3)
  ax_norm.set_xlabel("SGD step")
  ax_norm.set_ylabel("gradient norm $\\|g\\|$")
  ax_norm.set_title("raw gradient norm (solid), after clipping (dashed)")
  ax_norm.text(0.98, 0.97, "thin: seeds; thick: median;\n10-step running "
               "means", transform=ax_norm.transAxes, ha="right", va="top",
               fontsize=5.5, color="0.3")


def _plot_cosine(ax, results, colors):
  """Median cosine of clip by value per threshold, one line per lr."""
  value = results["column_method"] == 1
  thresholds = results["columns"][value]
  cos = results["grid_cosine"][:, value]               # (n_lr, n_v, seeds)
  shades = [plotting.PALETTE[i] for i in (5, 0, 6)]
  for i, lr in enumerate(results["learning_rates"]):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      med = np.nanmedian(cos[i], -1)
      lo, hi = np.nanmin(cos[i], -1), np.nanmax(cos[i], -1)
    ax.errorbar(thresholds * (1 + 0.04 * (i - 1)), med,
                yerr=[med - lo, hi - med], color=shades[i % 3], marker="o",
                ms=3, lw=1.0, capsize=2, label=f"lr {lr:g}")
  m = METHODS.index("value")
  i, j = results["best"][m]
  est = results["cosine_estimate"][m]
  n = results["cosine"].shape[1]
  ax.plot(results["columns"][j], est[0], marker="*", ms=9,
          color=colors["value"], ls="none",
          label=f"best cell, fresh seeds: {_estimate(est, n)}")
  ax.axhline(1.0, color=colors["norm"], lw=1.0,
             label="clip by norm: 1 (rescales only)")
  ax.set_xscale("log")
  ax.set_ylim(0, 1.08)
  ax.set_xlabel("clip-by-value threshold")
  ax.set_ylabel("cos(clipped, raw gradient)")
  ax.set_title("clip by value turns the update: median over steps")
  ax.legend(loc="lower right", fontsize=5.5,
            title="median, min-max over seeds", title_fontsize=5.5)


def _estimate(est, n):
  """``"v [lo, hi] (n seeds)"``, as ``ex.Estimate`` prints."""
  return str(ex.Estimate(*(float(x) for x in est), n, 0.9))


def _smooth(x, width=10):
  """Running mean over ``width`` steps (display only; the first ``width -
  1`` steps repeat the mean of the first window)."""
  kernel = np.ones(width) / width
  valid = np.convolve(x, kernel, mode="valid")
  return np.concatenate([np.full(width - 1, valid[0]), valid])


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
