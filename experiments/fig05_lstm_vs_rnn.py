"""LSTM vs RNN: gradient growth over the lag; the forget gate's sigmoid(b_f)^T.

Growth ``log10 ||J_T ... J_1 v||`` of a random unit tangent after T steps
(forward mode, ``method="jvp"``: every lag from one scan; in distribution
the same product backprop multiplies), seed mean, for (a) a tanh RNN at
several weight scales, whose growth is geometric in T at rate about
``log g`` below the edge of chaos, and (b, c) an LSTM (recurrent weights at
scale ``g = 0.01`` and ``g = 1``, no input) at forget bias 0, 1, 3, 5,
against the cell-path prediction ``T log sigmoid(b_f)``
(``ex.theory.lstm_forget_gradient``, exact for zero recurrent weights),
dashed. A larger forget bias turns the exponential decay into a slow one:
the measured rate per step is printed
next to the predicted ``log10 sigmoid(b_f)``. At g = 0.01 the cell path
dominates and the prediction holds; at g = 1 the recurrent path adds to it
(slower decay than predicted, slight growth at large ``b_f``).

Two sweeps: ``ex.sweep("rnn")`` over the RNN's weight scales and
``ex.sweep("lstm")`` over the grid recurrent scale x forget bias (both are
knobs, array leaves of the params, so the whole LSTM grid is one compiled
program).

Run: ``python experiments/fig05_lstm_vs_rnn.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"hidden": 32, "length": 64, "seeds": 2, "key": 0,
         "rnn_scales": [0.5, 0.9, 1.0, 1.1, 1.5, 2.0],
         "forget_biases": [0.0, 1.0, 3.0, 5.0], "lstm_scales": [0.01, 1.0]}
FULL = {"hidden": 128, "length": 256, "seeds": 4, "key": 0,
        "rnn_scales": [0.5, 0.9, 1.0, 1.1, 1.5, 2.0],
        "forget_biases": [0.0, 1.0, 3.0, 5.0], "lstm_scales": [0.01, 1.0]}
CACHE_VERSION = 2   # bump when compute() changes (2: ex.sweep)


def compute(config: dict) -> dict[str, np.ndarray]:
  """Growth against lag for the RNN scales and LSTM forget biases.

  Args:
    config: ``hidden``, ``length`` (T), ``seeds``, ``key`` (the sweeps'),
      ``rnn_scales`` (tanh RNN weight scales), ``forget_biases``,
      ``lstm_scales`` (the LSTM's recurrent weight scales).

  Returns:
    ``steps``: (T,) lags 1..T. ``rnn_scales``: (n_g,). ``forget_biases``:
    (n_b,). ``rnn_log10``: (n_g, T), ``lstm_log10``: (n_s, n_b, T) per LSTM
    scale, log10 growth, seed mean. ``lstm_theory_log10``: (n_b, T)
    ``T log10 sigmoid(b_f)``. ``rnn_rate`` (n_g,), ``lstm_rate`` (n_s,
    n_b): measured log10 growth per step (slope over the second half).
    ``rnn_theory_rate``: (n_g,) mean-field ``rnn_lyapunov_max / ln 10``.
    ``lstm_scales``: (n_s,). ``hidden``: ().
  """
  n, T, seeds = (int(config[k]) for k in ("hidden", "length", "seeds"))
  gs = np.asarray(config["rnn_scales"], np.float64)
  bfs = np.asarray(config["forget_biases"], np.float64)
  lstm_gs = np.asarray(config["lstm_scales"], np.float64)
  common = dict(hidden=n, length=T, seeds=seeds, key=int(config["key"]),
                progress=False)
  rnn = ex.sweep("rnn", activation="tanh", weight_scales=gs, **common)
  lstm = ex.sweep("lstm", grid={"weight_scale": lstm_gs,
                                "forget_bias": bfs}, **common)
  ln10 = np.log(10.0)
  rnn_log10 = np.mean(rnn.log_growth, axis=-1) / ln10       # (n_g, T)
  lstm_log10 = np.mean(lstm.log_growth, axis=-1) / ln10     # (n_s, n_b, T)
  steps = rnn.steps
  per_step = np.array([ex.theory.lstm_forget_gradient(b, 1) for b in bfs])
  return {
      "steps": steps,
      "rnn_scales": gs,
      "forget_biases": bfs,
      "rnn_log10": rnn_log10,
      "lstm_log10": lstm_log10,
      "lstm_theory_log10": per_step[:, None] * steps[None, :] / ln10,
      "rnn_rate": _slope(steps, rnn_log10),
      "lstm_rate": np.stack([_slope(steps, y) for y in lstm_log10]),
      "rnn_theory_rate": np.asarray(
          ex.theory.rnn_lyapunov_max("tanh", gs)) / ln10,
      "lstm_scales": lstm_gs,
      "hidden": np.array(n),
  }


def plot(results: dict[str, np.ndarray]):
  """(a) tanh RNN at several scales; (b, c) LSTM forget biases with theory,
  at a small and a unit recurrent scale."""
  n_s = len(results["lstm_scales"])
  fig, axes = plotting.new_figure(1, 1 + n_s, width="full", height=3.6,
                                  sharey=True)
  ax_rnn = axes[0]
  steps = results["steps"]
  with plotting.paper_style():
    for i, g in enumerate(results["rnn_scales"]):
      color = plotting.PALETTE[i % len(plotting.PALETTE)]
      ax_rnn.plot(steps, results["rnn_log10"][i], color=color,
                  label=f"g = {g:g}: {results['rnn_rate'][i]:+.3f} "
                        f"({results['rnn_theory_rate'][i]:+.3f})")
    ax_rnn.set_title(f"tanh RNN, {int(results['hidden'])} units")
    ax_rnn.legend(title="scale: measured (mean field)\n"
                        "log$_{10}$ growth per step",
                  fontsize=6, title_fontsize=6, loc="upper center",
                bbox_to_anchor=(0.5, -0.2))
    for j, (ax, g) in enumerate(zip(axes[1:], results["lstm_scales"])):
      for i, b in enumerate(results["forget_biases"]):
        color = plotting.PALETTE[i % len(plotting.PALETTE)]
        theory = results["lstm_theory_log10"][i]
        ax.plot(steps, results["lstm_log10"][j, i], color=color,
                label=f"$b_f$ = {b:g}: {results['lstm_rate'][j, i]:+.4f} "
                      f"({theory[0]:+.4f})")
        ax.plot(steps, theory, color=color, ls="--", lw=0.9)
      ax.plot([], [], color="0.3", ls="--", lw=0.9,
              label="$T\\,\\log_{10}\\sigma(b_f)$, theory at W = 0")
      ax.set_title(f"LSTM, {int(results['hidden'])} units, g = {g:g}")
      ax.legend(title="forget bias: measured (predicted)\n"
                      "log$_{10}$ growth per step",
                fontsize=6, title_fontsize=6, loc="upper center",
                bbox_to_anchor=(0.5, -0.2))
    lo = min(results["rnn_log10"].min(), results["lstm_log10"].min())
    hi = max(results["rnn_log10"].max(), results["lstm_log10"].max())
    for ax in axes:
      ax.axhline(0.0, color="0.6", lw=0.5, zorder=0)
      ax.set_xlabel("lag $T$ (steps)")
      ax.set_xlim(0, steps[-1])
    ax_rnn.set_ylim(max(lo, -60) - 2, hi + 2)
    ax_rnn.set_ylabel("log$_{10}$ growth $\\|J_T\\cdots J_1 v\\|$ (JVP)")
    plotting.label_panels(axes)
  return fig


def _slope(steps, y):
  """Least-squares slope per step over the second half of each row."""
  half = len(steps) // 2
  x = steps[half:].astype(np.float64)
  return np.array([np.polyfit(x, row[half:], 1)[0] for row in y])


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
