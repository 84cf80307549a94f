"""Truncated BPTT: a gradient horizon of k steps cannot learn a lag beyond it.

Truncated backpropagation through time with window k (``ex.train.train(...,
truncation=k)``; Williams & Peng 1990) stops the gradient every k steps, so
the loss at the last step reaches back exactly k transitions:
``dL/dh_(T-lag)`` is exactly zero for ``lag >= k`` (panel a). Delayed recall
with lag L asks for the input ``L`` steps before the last, which first
appears in the state ``h_(T-L)``. A window ``k >= L`` trains the recurrence
to carry what that state holds to the end; ``k < L`` never sees it (panel
b). What short windows still reach below the constant baseline comes from
the readout, which always gets the full gradient, decoding whatever the
recurrence happens to remember (a reservoir).

Every run is the same compiled program (the window is a traced argument),
shared with fig11's clip-by-norm run: tanh RNN, g = 1, SGD, clip by norm 1.

Run: ``python experiments/fig12_truncated_bptt.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

# The training settings are those of fig11 (one compiled program for both).
QUICK = {"train": {"hidden": 16, "length": 20, "lag": 8, "steps": 300,
                   "batch": 32, "seeds": 4},
         "truncations": [1, 2, 4, 6, 7, 8, 9, 12, 16, 20],
         "horizon_truncations": [1, 4, 8, 20],
         "weight_scale": 1.0, "learning_rate": 0.3, "norm_threshold": 1.0,
         "key": 0}
FULL = {"train": {"hidden": 32, "length": 40, "lag": 16, "steps": 1000,
                  "batch": 32, "seeds": 6},
        "truncations": [1, 4, 8, 12, 15, 16, 17, 18, 20, 28, 40],
        "horizon_truncations": [1, 4, 8, 16, 40],
        "weight_scale": 1.0, "learning_rate": 0.3, "norm_threshold": 1.0,
        "key": 0}
CACHE_VERSION = 1


def compute(config: dict) -> dict[str, np.ndarray]:
  """Gradient horizon and final loss for each truncation window.

  Args:
    config: ``train`` (hidden, length T, lag L, steps, batch, seeds; shared
      with fig11), ``truncations`` (windows k; k = T is full BPTT),
      ``horizon_truncations`` (the k drawn in panel a; must be among
      ``truncations``), ``weight_scale``, ``learning_rate``,
      ``norm_threshold``, ``key``.

  Returns:
    ``truncations``: (n_k,). ``lag_grad_norm``: (n_k, T) the median over
    seeds of the mean over the first 10% of steps of ``||dL/dh_(T-lag)||``,
    lag = 0..T-1. ``final_loss``: (n_k, seeds) mean loss over the last 10%
    of steps. ``loss_curves``: (n_k, steps) median over seeds.
    ``baseline_loss``, ``lag``, ``length``: ().
  """
  t = config["train"]
  length, steps = int(t["length"]), int(t["steps"])
  window = max(1, steps // 10)
  horizon, final, curves = [], [], []
  baseline = np.nan
  for k in config["truncations"]:
    r = ex.train.train(
        "recall", model="rnn", activation="tanh", hidden=int(t["hidden"]),
        steps=steps, batch=int(t["batch"]), length=length,
        lag=int(t["lag"]), seeds=int(t["seeds"]), optimizer="sgd",
        learning_rate=config["learning_rate"],
        weight_scale=config["weight_scale"], clip="norm",
        threshold=config["norm_threshold"], truncation=int(k),
        lags=tuple(range(length)), key=int(config["key"]))
    lag_norm = np.asarray(r.lag_grad_norm)          # (seeds, steps, T)
    loss = np.asarray(r.loss)                       # (seeds, steps)
    horizon.append(np.median(lag_norm[:, :window].mean(1), 0))
    final.append(loss[:, -window:].mean(1))
    curves.append(np.median(loss, 0))
    baseline = r.config["baseline_loss"]
  return {
      "truncations": np.asarray(config["truncations"], np.int64),
      "horizon_truncations": np.asarray(config["horizon_truncations"],
                                        np.int64),
      "lag_grad_norm": np.asarray(horizon),
      "final_loss": np.asarray(final),
      "loss_curves": np.asarray(curves),
      "baseline_loss": np.asarray(baseline),
      "lag": np.asarray(int(t["lag"])),
      "length": np.asarray(length),
  }


def plot(results: dict[str, np.ndarray]):
  """(a) ||dL/dh_(T-lag)|| vs lag, (b) final loss vs k, (c) loss curves."""
  fig, axes = plotting.new_figure(1, 3, width="full", height=2.6)
  ax_h, ax_k, ax_c = axes
  ks = results["truncations"]
  length, lag = int(results["length"]), int(results["lag"])
  lags = np.arange(length)
  chosen = list(results["horizon_truncations"])
  palette = [plotting.PALETTE[i] for i in (1, 3, 0, 2, 4, 5)]
  with plotting.paper_style():
    norms = results["lag_grad_norm"]
    positive = norms[norms > 0]
    floor = positive.min() / 30 if positive.size else 1e-8
    for c, k in enumerate(chosen):
      i = int(np.nonzero(ks == k)[0][0])
      color = palette[c % len(palette)]
      row = norms[i]
      nonzero = row > 0
      label = "full BPTT" if k >= length else f"k = {k}"
      ax_h.semilogy(lags[nonzero], row[nonzero], color=color, marker="o",
                    ms=2, lw=1.0, label=label)
      zeros = ~nonzero
      ax_h.plot(lags[zeros], np.full(zeros.sum(), floor / 1.7 ** c),
                ls="none", marker="v", ms=2.5, color=color)
    ax_h.axhline(floor * 1.6, color="0.6", lw=0.5)
    ax_h.text(-0.5, floor * 2.0, "below: exactly 0", ha="left", fontsize=6,
              color="0.3")
    ax_h.axvline(lag, color="0.4", lw=0.6, ls="--")
    ax_h.text(lag + 0.3, floor * 6, f"$h_{{T-L}}$: first holds\nthe "
              f"recalled value\n(L = {lag})", fontsize=5.5, va="bottom",
              color="0.3")
    ax_h.set_xlabel("lag (steps before the end)")
    ax_h.set_ylabel("$\\|\\partial L / \\partial h_{T-lag}\\|$ (early training)")
    ax_h.set_title("gradient horizon")
    ax_h.legend(loc="upper right", fontsize=6, title="window",
                title_fontsize=6)

    final = results["final_loss"]
    base = float(results["baseline_loss"])
    ax_k.plot(np.repeat(ks[:, None], final.shape[1], 1).ravel(),
              final.ravel(), ls="none", marker="o", ms=2, alpha=0.4,
              color=plotting.PALETTE[0])
    ax_k.plot(ks, np.median(final, 1), color=plotting.PALETTE[0], lw=1.2,
              marker="s", ms=3, label="median over seeds")
    ax_k.axhline(base, color="0.4", lw=0.7, ls=":",
                 label=f"predict the mean ({base:.3f})")
    ax_k.axvspan(0, lag - 0.5, color="0.9", zorder=0)
    ax_k.text(0.03, 0.04, f"k < L = {lag}: the gradient\nnever reaches "
              f"$h_{{T-L}}$", transform=ax_k.transAxes, fontsize=6,
              color="0.3")
    ax_k.set_xlim(0, ks.max() + 1)
    ax_k.set_yscale("log")
    ax_k.set_xlabel("truncation window k (steps)")
    ax_k.set_ylabel("final loss (MSE, last 10% of steps)")
    below = ks < lag
    short = float(np.median(final[below][-1])) if below.any() else np.nan
    ok = float(np.median(final[ks == lag][0])) if (ks == lag).any() else (
        np.nan)
    ax_k.set_title("final loss vs window")
    ax_k.text(0.97, 0.55, f"k = {ks[below][-1] if below.any() else '-'}: "
              f"{short:.3g}\nk = {lag}: {ok:.3g}\nfull BPTT: "
              f"{float(np.median(final[-1])):.3g}", transform=ax_k.transAxes,
              ha="right", fontsize=6)
    ax_k.legend(loc="upper right", fontsize=6)

    steps = np.arange(results["loss_curves"].shape[1])
    for c, k in enumerate(chosen):
      i = int(np.nonzero(ks == k)[0][0])
      ax_c.semilogy(steps, results["loss_curves"][i],
                    color=palette[c % len(palette)], lw=1.0,
                    label="full BPTT" if k >= length else f"k = {k}")
    ax_c.axhline(base, color="0.4", lw=0.7, ls=":")
    ax_c.set_xlabel("SGD step")
    ax_c.set_ylabel("batch loss (median over seeds)")
    ax_c.set_title("training curves")
    ax_c.legend(loc="lower left", fontsize=6)
    plotting.label_panels(axes)
  return fig


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
