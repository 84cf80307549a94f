"""Gradient clipping in training: without it an exploding RNN dies in NaNs.

A tanh RNN with recurrent gain ``g = 1.25`` (held fixed; ``W0`` is trained)
learns delayed recall (output the value seen ``lag`` steps before the end)
with plain SGD. At this gain the gradient norm grows by orders of magnitude
within a few dozen updates: unclipped, one update overflows the parameters
and training stops at ``nan_step`` (every seed, in QUICK and FULL). Clipping
each gradient entry (``clip by value``) or the global norm (``clip by
norm``, Pascanu et al. 2013, Algorithm 1) keeps every update finite. Clip
by value learns in both configs; clip by norm at threshold 1 learns at lag
8 (QUICK) but at lag 16 (FULL) its full-length steps of size lr * 1 keep
the loss above the baseline within 1000 steps: finiteness is not learning.
Clipping by value also turns the update: the cosine between the clipped
and the raw gradient drops below 1; clipping by norm only shortens it
(cosine exactly 1).

"No clipping" is run as ``clip="norm"`` with the threshold at the largest
float32, which never triggers on a finite gradient: bitwise the same records
as ``clip="none"`` (checked on this configuration), and the same compiled
training program as the clip-by-norm runs here and in fig12, which keeps the
figures' compile time down (each ``clip`` method compiles its own program).

Run: ``python experiments/fig11_clipping_training.py [--quick]``.
"""

from __future__ import annotations

import warnings

import numpy as np

import exploding as ex
from exploding import plotting

# The training settings are those of fig12: equal settings share one
# compiled program when the runner builds both figures in one process.
QUICK = {"train": {"hidden": 16, "length": 20, "lag": 8, "steps": 300,
                   "batch": 32, "seeds": 4},
         "weight_scale": 1.25, "learning_rate": 0.3,
         "value_threshold": 0.01, "norm_threshold": 1.0, "key": 0}
FULL = {"train": {"hidden": 32, "length": 40, "lag": 16, "steps": 1000,
                  "batch": 32, "seeds": 6},
        "weight_scale": 1.25, "learning_rate": 0.3,
        "value_threshold": 0.01, "norm_threshold": 1.0, "key": 0}
METHODS = ("none", "value", "norm")
ALLOW_NONFINITE = {"loss", "pre_norm", "post_norm", "cosine"}
CACHE_VERSION = 1
_NEVER = float(np.finfo(np.float32).max)
_LOSS_TOP = 1e3


def compute(config: dict) -> dict[str, np.ndarray]:
  """Per-step records of the three runs.

  Args:
    config: ``train`` (hidden, length, lag, steps, batch, seeds: shared with
      fig12), ``weight_scale``, ``learning_rate``, ``value_threshold``,
      ``norm_threshold``, ``key``.

  Returns:
    ``loss``, ``pre_norm``, ``post_norm``, ``cosine``: (3, seeds, steps),
    rows in ``METHODS`` order (none, value, norm); NaN after a run's
    ``nan_step``. ``nan_step``: (3, seeds) int, -1 if finite throughout.
    ``thresholds``: (3,) (float32 max for none). ``baseline_loss``: () the loss of
    predicting the mean. ``lag``, ``weight_scale``, ``learning_rate``: ().
  """
  records = {k: [] for k in ("loss", "pre_norm", "post_norm", "cosine",
                             "nan_step")}
  thresholds = {"none": _NEVER, "value": config["value_threshold"],
                "norm": config["norm_threshold"]}
  baseline = np.nan
  for method in METHODS:
    # The clip-by-value program is this figure's alone: it records no
    # per-lag gradients, which makes it smaller to compile.
    r = train_recall(config, clip="value" if method == "value" else "norm",
                     threshold=thresholds[method],
                     all_lags=method != "value",
                     weight_scale=config["weight_scale"],
                     learning_rate=config["learning_rate"],
                     key=config["key"])
    for k in records:
      records[k].append(np.asarray(getattr(r, k)))
    baseline = r.config["baseline_loss"]
  out = {k: np.stack(v) for k, v in records.items()}
  out["thresholds"] = np.array([_NEVER, config["value_threshold"],
                                config["norm_threshold"]], np.float64)
  out["baseline_loss"] = np.asarray(baseline)
  out["lag"] = np.asarray(config["train"]["lag"])
  out["weight_scale"] = np.asarray(config["weight_scale"])
  out["learning_rate"] = np.asarray(config["learning_rate"])
  return out


def train_recall(config, *, clip, threshold, weight_scale, learning_rate,
                 key, all_lags=True):
  """The tanh-RNN delayed-recall run; with ``all_lags`` and ``clip="norm"``
  the same program as fig12's."""
  t = config["train"]
  return ex.train.train(
      "recall", model="rnn", activation="tanh", hidden=int(t["hidden"]),
      steps=int(t["steps"]), batch=int(t["batch"]), length=int(t["length"]),
      lag=int(t["lag"]), seeds=int(t["seeds"]), optimizer="sgd",
      learning_rate=learning_rate, weight_scale=weight_scale, clip=clip,
      threshold=threshold,
      lags=tuple(range(int(t["length"]))) if all_lags else (), key=int(key))


def plot(results: dict[str, np.ndarray]):
  """(a) loss, (b) raw and clipped gradient norm, (c) update cosine."""
  fig, axes = plotting.new_figure(1, 3, width="full", height=2.6)
  ax_loss, ax_norm, ax_cos = axes
  colors = {"none": plotting.PALETTE[1], "value": plotting.PALETTE[0],
            "norm": plotting.PALETTE[2]}
  names = {"none": "no clipping",
           "value": f"clip by value ({results['thresholds'][1]:g})",
           "norm": f"clip by norm ({results['thresholds'][2]:g})"}
  steps = np.arange(results["loss"].shape[-1])
  with plotting.paper_style():
    for m, method in enumerate(METHODS):
      color = colors[method]
      loss = results["loss"][m]
      for s in range(loss.shape[0]):
        ax_loss.semilogy(steps, loss[s], color=color, lw=0.5, alpha=0.35)
        ax_norm.semilogy(steps, results["pre_norm"][m, s], color=color,
                         lw=0.5, alpha=0.35)
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(np.where(np.isfinite(loss), loss, np.nan), 0)
      final = _final(loss)
      ax_loss.semilogy(steps, median, color=color, lw=1.3,
                       label=f"{names[method]}: final {final}")
      nan_steps = results["nan_step"][m]
      dead = nan_steps >= 0
      if dead.any():
        top = _LOSS_TOP
        ax_loss.plot(nan_steps[dead], np.full(dead.sum(), top), "x",
                     color="k", ms=5, mew=1.2, zorder=5, clip_on=False)
        peak = np.nanmax(np.where(np.isfinite(loss), loss, np.nan))
        ax_loss.annotate(
            f"NaN (x) in {dead.sum()}/{len(dead)} seeds at steps "
            f"{nan_steps[dead].min()}-{nan_steps[dead].max()};\n"
            f"loss first climbs to {peak:.0e}",
            (nan_steps[dead].max(), top), xytext=(6, -16),
            textcoords="offset points", fontsize=6, color=color)
        pre = results["pre_norm"][m][dead]
        ax_norm.annotate(
            f"no clipping: raw $\\|g\\|$ up to\n{np.nanmax(pre):.1e} "
            f"before NaN",
            (nan_steps[dead].max(), np.nanmax(pre)), xytext=(6, -18),
            textcoords="offset points", fontsize=6, color=color)
    ax_loss.axhline(float(results["baseline_loss"]), color="0.4", lw=0.7,
                    ls=":", label="predict the mean (baseline)")
    ax_loss.set_xlabel("SGD step")
    ax_loss.set_ylabel("batch loss (MSE)")
    ax_loss.set_title("loss")
    ax_loss.legend(loc="center right", fontsize=5.5)
    ax_loss.set_ylim(3e-3, _LOSS_TOP)

    for m, method in ((1, "value"), (2, "norm")):
      ax_norm.semilogy(steps, np.nanmedian(results["post_norm"][m], 0),
                       color=colors[method], lw=1.2, ls="--")
    ax_norm.set_xlabel("SGD step")
    ax_norm.set_ylabel("gradient norm $\\|g\\|$")
    ax_norm.set_title("gradient norm")
    ax_norm.text(0.98, 0.45, "thin: raw, per seed\ndashed: after clipping",
                 transform=ax_norm.transAxes, ha="right", fontsize=6,
                 color="0.3")

    for m, method in ((1, "value"), (2, "norm")):
      cos = results["cosine"][m]
      for s in range(cos.shape[0]):
        ax_cos.plot(steps, cos[s], color=colors[method], lw=0.5, alpha=0.4)
      ax_cos.plot(steps, np.nanmedian(cos, 0), color=colors[method], lw=1.2,
                  label=f"{names[method]}: min {np.nanmin(cos):.2f}")
    ax_cos.set_xlabel("SGD step")
    ax_cos.set_ylabel("cos(clipped, raw gradient)")
    ax_cos.set_title("direction of the update")
    ax_cos.set_ylim(min(0.0, float(np.nanmin(results["cosine"][1:])) - 0.05),
                    1.05)
    ax_cos.legend(loc="lower right", fontsize=6)
    fig.suptitle(
        f"Delayed recall (lag {int(results['lag'])}), tanh RNN with g = "
        f"{float(results['weight_scale']):g}, SGD lr "
        f"{float(results['learning_rate']):g}; thin lines: seeds, thick: "
        f"median", fontsize=7, x=0.01, ha="left")
    plotting.label_panels(axes)
  return fig


def _final(loss):
  """Mean loss over the last 10% of steps, seeds that stayed finite."""
  tail = loss[:, -max(1, loss.shape[1] // 10):]
  ok = np.all(np.isfinite(tail), axis=1)
  return f"{np.mean(tail[ok]):.3g}" if ok.any() else "NaN"


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
