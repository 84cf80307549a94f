"""Batch norm explodes gradients at a rate set by the batch size.

A ReLU MLP with batch norm before each nonlinearity (no affine, Gaussian
weights; BN makes the weight scale irrelevant) is mapped over depth for
batch sizes B = 4 .. 256: the growth ``log ||J_L ... J_1 v||`` of a random
tangent of the whole (B, width) activation, measured forward in log space,
rises linearly with depth at every B. Its slope per layer is compared with
the exact finite-B formula of Yang et al. (2019),
``0.5 log batchnorm_gradient_rate("relu", B)`` (closed form at infinite
width: 0.563 nats/layer at B = 4, tending to ``0.5 log(pi / (pi - 1)) =
0.192`` as B grows).

Where they part: at B = 4 and 5 the per-unit factor ``1 / chi^2_(B-1)``
of the formula has infinite variance, so the typical (log-mean) growth a
network shows falls below the formula's mean growth; and at large B the
measured rate sits a few percent below the formula. Panel b asks whether
that gap is finite width: the rate at the largest B over widths.

Each point is one ``ex.sweep("mlp", batchnorm=True, batch=B, width=W,
...)`` at weight scale 1 (B and W are static shapes: one compilation each);
every sweep has the same key. Spreads: 90% percentile bootstrap over seeds
(``GradientMap.rate(interval=0.9)``).

References:
  Yang, Pennington, Rao, Sohl-Dickstein, Schoenholz. A mean field theory of
  batch normalization. ICLR 2019.

Run: ``python experiments/fig15_batchnorm_batch_size.py [--quick]``.
"""

from __future__ import annotations

import numpy as np

import exploding as ex
from exploding import plotting

ACTIVATION = "relu"

QUICK = {"width": 128, "depth": 24, "seeds": 8, "batch_sizes": [4, 16],
         "widths": [], "key": 0}
FULL = {"width": 256, "depth": 32, "seeds": 8,
        "batch_sizes": [4, 6, 8, 16, 32, 64, 128, 256],
        "widths": [128, 512], "key": 0}
CACHE_VERSION = 1


def compute(config: dict) -> dict[str, np.ndarray]:
  """BN ReLU MLP rates per layer over batch sizes (and widths at the
  largest batch size).

  Args:
    config: ``width`` (W of the batch-size scan), ``depth`` (L), ``seeds``,
      ``batch_sizes`` (Bs, each >= 4), ``widths`` (extra widths for the
      largest B; may be empty), ``key`` (int).

  Returns:
    ``batch_sizes``: (nB,). ``log_growth``: (nB, L, seeds) natural log.
    ``rate``, ``rate_low``, ``rate_high``: (nB,) nats/layer, seed mean and
    90% bootstrap interval. ``theory``: (nB,) ``0.5 log lambda_B``.
    ``widths``: (nW,) sorted, including ``width``; ``width_rate``,
    ``width_low``, ``width_high``: (nW,) at B = max(Bs). ``width``: ().
    ``n_seeds``: ().
  """
  width, depth, seeds = (int(config[k]) for k in ("width", "depth", "seeds"))
  bs = np.asarray(config["batch_sizes"], int)
  if bs.size == 0 or np.any(bs < 4):
    raise ValueError(f"batch_sizes must be ints >= 4, got {bs}")

  def rate(batch, w):
    m = ex.sweep("mlp", batchnorm=True, batch=int(batch), width=int(w),
                 activation=ACTIVATION, length=depth, seeds=seeds,
                 weight_scales=[1.0], key=int(config["key"]), progress=False)
    return m, m.rate(interval=0.9)

  runs = [rate(b, width) for b in bs]
  widths = sorted(set(int(w) for w in config["widths"]) | {width})
  by_width = [runs[-1][1] if w == width else rate(bs.max(), w)[1]
              for w in widths]
  pick = lambda ests, f: np.array([float(getattr(e, f)[0]) for e in ests])
  ests = [e for _, e in runs]
  return {
      "batch_sizes": bs,
      "log_growth": np.stack([m.log_growth[0] for m, _ in runs]),
      "rate": pick(ests, "value"),
      "rate_low": pick(ests, "low"),
      "rate_high": pick(ests, "high"),
      "theory": np.array([0.5 * ex.theory.batchnorm_log_gradient_rate(
          ACTIVATION, int(b)) for b in bs]),
      "widths": np.array(widths),
      "width_rate": pick(by_width, "value"),
      "width_low": pick(by_width, "low"),
      "width_high": pick(by_width, "high"),
      "width": np.array(width),
      "n_seeds": np.array(seeds),
  }


def plot(results: dict[str, np.ndarray]):
  """(a) rate per layer vs B, measured vs the finite-B formula; (b) the
  rate at the largest B over widths."""
  fig, (ax_b, ax_w) = plotting.new_figure(1, 2, width="full", height=2.7,
                                          gridspec_kw={"width_ratios": [2, 1]})
  bs = results["batch_sizes"]
  with plotting.paper_style():
    bb = np.geomspace(4, max(bs.max(), 8), 200)
    grid = np.unique(np.round(bb).astype(int))
    ax_b.plot(grid, [0.5 * ex.theory.batchnorm_log_gradient_rate(
        ACTIVATION, int(b)) for b in grid], "k.-", lw=0.9, ms=1.5,
              label="finite-B formula $\\frac{1}{2}\\log\\lambda_B$ "
                    "(Yang et al. 2019)")
    ax_b.axhline(0.5 * np.log(np.pi / (np.pi - 1)), color="0.5", lw=0.6,
                 ls=":", label="$B \\to \\infty$: "
                               "$\\frac{1}{2}\\log\\frac{\\pi}{\\pi - 1}$")
    yerr = np.stack([results["rate"] - results["rate_low"],
                     results["rate_high"] - results["rate"]])
    ax_b.errorbar(bs, results["rate"], yerr=yerr, fmt="o", ms=3, capsize=2,
                  color="C3", label=f"measured, width "
                  f"{int(results['width'])} (90% bootstrap)")
    ax_b.set_xscale("log", base=2)
    ax_b.set_xticks(bs, [str(b) for b in bs])
    ax_b.set_xticks([], minor=True)
    ax_b.set_xlabel("batch size $B$")
    ax_b.set_ylabel("gradient growth (nats / layer)")
    ax_b.set_title("BN ReLU MLP: explosion rate vs batch size")
    ax_b.legend(loc="upper right", fontsize=6)

    ws = results["widths"]
    yerr = np.stack([results["width_rate"] - results["width_low"],
                     results["width_high"] - results["width_rate"]])
    ax_w.errorbar(ws, results["width_rate"], yerr=yerr, fmt="o-", ms=3,
                  capsize=2, color="C3", lw=0.8, label="measured")
    ax_w.axhline(results["theory"][-1], color="k", lw=0.9,
                 label="formula (infinite width)")
    lo = min(results["width_low"].min(), results["theory"][-1])
    hi = max(results["width_high"].max(), results["theory"][-1])
    ax_w.set_ylim(lo - 0.3 * (hi - lo), hi + 0.3 * (hi - lo))
    ax_w.set_xscale("log", base=2)
    ax_w.set_xticks(ws, [str(w) for w in ws])
    ax_w.set_xticks([], minor=True)
    ax_w.set_xlabel("width $W$")
    ax_w.set_title(f"B = {int(bs[-1])}: rate vs width")
    ax_w.legend(loc="lower left", fontsize=6)
    plotting.label_panels([ax_b, ax_w])
    L = results["log_growth"].shape[-2]
    fig.suptitle(
        f"Batch-normalised ReLU MLPs, depth {L}, "
        f"{int(results['n_seeds'])} seeds: JVP growth per layer (slope "
        f"after layer {L // 4})", fontsize=7)
  return fig


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
