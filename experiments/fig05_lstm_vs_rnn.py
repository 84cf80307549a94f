"""LSTM vs RNN: gradient growth over the lag; the forget gate's sigmoid(b_f)^T.

Growth ``log10 ||J_T ... J_1 v||`` of a random unit tangent after T steps
(forward mode, ``method="jvp"``: every lag from one scan; in distribution
the same product backprop multiplies), seed mean, for (a) a tanh RNN at
several weight scales, whose growth is geometric in T below the edge of
chaos: at ``log(g rho(W0))`` per step for each seed's own ``W0``
(``ex.theory.tied_ordered_rate``: one tied matrix, its state at the fixed
point 0), not at mean field's ``log g``; and (b, c) an LSTM (recurrent
weights at scale ``g = 0.01`` and ``g = 1``, no input) at forget bias 0,
1, 3, 5, against the cell-path prediction ``T log sigmoid(b_f)``
(``ex.theory.lstm_forget_gradient``, exact for zero recurrent weights),
dashed. A larger forget bias turns the exponential decay into a slow one:
the measured rate per step (slope over the second half, seed mean, with its
90% bootstrap interval over seeds) is printed next to the predicted
``log10 sigmoid(b_f)``. At g = 0.01 the cell path dominates and the
prediction holds; at g = 1 the recurrent path adds to it
(slower decay than predicted, slight growth at large ``b_f``).

Two sweeps: ``ex.sweep("rnn")`` over the RNN's weight scales and
``ex.sweep("lstm")`` over the grid recurrent scale x forget bias (both are
knobs, array leaves of the params, so the whole LSTM grid is one compiled
program).

Run: ``python experiments/fig05_lstm_vs_rnn.py [--quick]``.
"""

from __future__ import annotations

import math

import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"hidden": 32, "length": 64, "seeds": 4, "key": 0,
         "rnn_scales": [0.5, 0.8, 1.0, 1.1, 1.5, 2.0],
         "forget_biases": [0.0, 1.0, 3.0, 5.0], "lstm_scales": [0.01, 1.0]}
FULL = {"hidden": 128, "length": 256, "seeds": 16, "key": 0,
        "rnn_scales": [0.5, 0.8, 1.0, 1.1, 1.5, 2.0],
        "forget_biases": [0.0, 1.0, 3.0, 5.0], "lstm_scales": [0.01, 1.0]}
CACHE_VERSION = 3   # bump when compute() changes (3: intervals, tied W0)
LEVEL = 0.9   # bootstrap intervals over seeds
# The tied rate is NaN where a seed's fixed point 0 is unstable (g rho >= 1).
ALLOW_NONFINITE = {"rnn_tied_rate", "rnn_tied_low", "rnn_tied_high"}


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
    n_b): measured log10 growth per step (slope over the second half, seed
    mean), each with ``_low``/``_high``, its ``LEVEL`` bootstrap interval.
    ``rnn_theory_rate``: (n_g,) mean-field ``rnn_lyapunov_max / ln 10``.
    ``rnn_tied_rate``, ``_low``, ``_high``: (n_g,) ``log10(g rho(W0))``
    over the seeds' own ``W0`` (mean, interval; NaN unless every seed's
    fixed point 0 is stable). ``lstm_scales``: (n_s,). ``hidden``: ().
    ``seeds``: ().
  """
  n, T, seeds = (int(config[k]) for k in ("hidden", "length", "seeds"))
  gs = np.asarray(config["rnn_scales"], np.float64)
  bfs = np.asarray(config["forget_biases"], np.float64)
  lstm_gs = np.asarray(config["lstm_scales"], np.float64)
  common = dict(hidden=n, length=T, seeds=seeds, key=int(config["key"]),
                progress=False)
  w0 = ex.theory.sweep_params(ex.rnn.model(n), seeds,
                              key=int(config["key"])).W0
  ln10 = np.log(10.0)
  tied = ex.theory.tied_ordered_rate("tanh", gs, w0) / ln10   # (seeds, n_g)
  tied = np.where(np.all(tied < 0, axis=0), tied, np.nan)
  tied_mean = np.array([_mean_interval(t) for t in tied.T])  # (n_g, 3)
  rnn = ex.sweep("rnn", activation="tanh", weight_scales=gs, **common)
  lstm = ex.sweep("lstm", grid={"weight_scale": lstm_gs,
                                "forget_bias": bfs}, **common)
  rnn_rate = rnn.rate(burn_in=T // 2, interval=LEVEL)
  lstm_rate = lstm.rate(burn_in=T // 2, interval=LEVEL)
  steps = rnn.steps
  per_step = np.array([ex.theory.lstm_forget_gradient(b, 1) for b in bfs])
  return {
      "steps": steps,
      "rnn_scales": gs,
      "forget_biases": bfs,
      "rnn_log10": np.mean(rnn.log_growth, axis=-1) / ln10,
      "lstm_log10": np.mean(lstm.log_growth, axis=-1) / ln10,
      "lstm_theory_log10": per_step[:, None] * steps[None, :] / ln10,
      "rnn_rate": rnn_rate.value / ln10,
      "rnn_rate_low": rnn_rate.low / ln10,
      "rnn_rate_high": rnn_rate.high / ln10,
      "lstm_rate": lstm_rate.value / ln10,
      "lstm_rate_low": lstm_rate.low / ln10,
      "lstm_rate_high": lstm_rate.high / ln10,
      "rnn_theory_rate": np.asarray(
          ex.theory.rnn_lyapunov_max("tanh", gs)) / ln10,
      "rnn_tied_rate": tied_mean[:, 0],
      "rnn_tied_low": tied_mean[:, 1],
      "rnn_tied_high": tied_mean[:, 2],
      "lstm_scales": lstm_gs,
      "hidden": np.array(n),
      "seeds": np.array(seeds),
  }


def plot(results: dict[str, np.ndarray]):
  """(a) tanh RNN at several scales; (b, c) LSTM forget biases with theory,
  at a small and a unit recurrent scale."""
  n_s = len(results["lstm_scales"])
  fig, axes = plotting.new_figure(1, 1 + n_s, width="full", height=4.0,
                                  sharey=True)
  ax_rnn = axes[0]
  steps = results["steps"]
  mid = len(steps) // 2
  with plotting.paper_style():
    for i, g in enumerate(results["rnn_scales"]):
      color = plotting.PALETTE[i % len(plotting.PALETTE)]
      y = results["rnn_log10"][i]
      tied = results["rnn_tied_rate"][i]
      label = (f"g = {g:g}: " + _fmt(results, "rnn_rate", i)
               + f"\n    MF {results['rnn_theory_rate'][i]:+.3f}, tied "
               + (_fmt(results, "rnn_tied", i, key="rnn_tied_rate")
                  if np.isfinite(tied)
                  else "none ($g\\,\\rho(W_0) \\geq 1$ in some seed)"))
      ax_rnn.plot(steps, y, color=color, label=label)
      # Slopes through the curve's midpoint: mean field and tied W0.
      for rate, ls in ((results["rnn_theory_rate"][i], "--"), (tied, ":")):
        if np.isfinite(rate) and rate < 0:
          ax_rnn.plot(steps, y[mid] + rate * (steps - steps[mid]), color=color,
                      ls=ls, lw=0.8)
    ax_rnn.plot([], [], color="0.3", ls="--", lw=0.8,
                label="mean field $\\lambda_{max}$ (MF) slope")
    ax_rnn.plot([], [], color="0.3", ls=":", lw=0.8,
                label="tied $W_0$: $\\log_{10}(g\\,\\rho(W_0))$ slope")
    ax_rnn.set_title(f"tanh RNN, {int(results['hidden'])} units")
    ax_rnn.legend(title="scale: measured log$_{10}$ growth per step",
                  fontsize=5, title_fontsize=5.5, loc="upper center",
                  bbox_to_anchor=(0.5, -0.2))
    for j, (ax, g) in enumerate(zip(axes[1:], results["lstm_scales"])):
      for i, b in enumerate(results["forget_biases"]):
        color = plotting.PALETTE[i % len(plotting.PALETTE)]
        theory = results["lstm_theory_log10"][i]
        ax.plot(steps, results["lstm_log10"][j, i], color=color,
                label=f"$b_f$ = {b:g}: " + _fmt(results, "lstm_rate", (j, i),
                                                digits=4)
                      + f" ({theory[0]:+.4f})")
        ax.plot(steps, theory, color=color, ls="--", lw=0.9)
      ax.plot([], [], color="0.3", ls="--", lw=0.9,
              label="$T\\,\\log_{10}\\sigma(b_f)$, theory at W = 0")
      ax.set_title(f"LSTM, {int(results['hidden'])} units, g = {g:g}")
      ax.legend(title="forget bias: measured (predicted)\n"
                      "log$_{10}$ growth per step",
                fontsize=5, title_fontsize=5.5, loc="upper center",
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
    fig.suptitle(f"seed mean of {int(results['seeds'])} seeds; rates: slope "
                 f"over the second half, [{LEVEL:.0%} bootstrap interval over"
                 f" seeds]", fontsize=7)
  return fig


def _fmt(results, name, i, *, key=None, digits=3) -> str:
  """``"v [lo, hi]"`` of ``results[key or name][i]`` and its interval."""
  key = key or name
  v, lo, hi = (results[k][i] for k in (key, name + "_low", name + "_high"))
  return f"{v:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _mean_interval(values: np.ndarray, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
  """Mean of ``values`` over seeds and its ``LEVEL`` percentile bootstrap
  interval (numpy seed ``seed``); NaNs if any value is NaN."""
  if not np.all(np.isfinite(values)):
    return math.nan, math.nan, math.nan
  boot = values[np.random.default_rng(seed).integers(
      0, values.size, (resamples, values.size))]
  low, high = np.percentile(boot.mean(axis=1),
                            [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
  return float(values.mean()), float(low), float(high)


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
