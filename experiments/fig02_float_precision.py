"""Floating-point precision: the gap between neighbouring numbers, by magnitude.

A format with ``p`` mantissa bits spaces its numbers ``2**(e - p)`` apart
in the binade ``[2**e, 2**(e+1))``: the relative gap is constant (``eps``,
at most) from the smallest normal number to the largest, and grows to 1
through the subnormals, where the absolute gap stops shrinking. Below the
smallest subnormal a product is 0; above the largest finite number it is
``inf``. The gaps are measured natively (``np.spacing``, ``ml_dtypes``).

Run: ``python experiments/fig02_float_precision.py [--quick]``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator

from exploding import plotting

QUICK = {"points_per_decade": 4}
FULL = {"points_per_decade": 24}

DTYPES = ("float16", "bfloat16", "float32", "float64")
_NUMPY_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
                 "float32": np.float32, "float64": np.float64}
# x + 1 == x from here on: the first integer whose spacing exceeds 2.
_ABSORBING = {"float16": 2.0 ** 11, "bfloat16": 2.0 ** 8,
              "float32": 2.0 ** 24, "float64": 2.0 ** 53}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Spacing of representable numbers across each format's whole range.

  Args:
    config: ``points_per_decade`` (int), the density of the magnitude grid.

  Returns:
    Per format ``name`` in ``DTYPES``: ``{name}_x`` (n,), representable
    magnitudes from the smallest subnormal to just below the largest finite
    number, and ``{name}_spacing`` (n,), ``np.spacing`` there (float64).
    ``max``, ``tiny``, ``smallest_subnormal``, ``eps``: (4,) float64, one
    per format. ``absorbing``: (4,), a power of two ``x`` with ``x + 1 == x``
    natively; ``absorbing_sum``: (4,), that sum computed natively.
  """
  density = int(config["points_per_decade"])
  results = {}
  limits = {key: [] for key in ("max", "tiny", "smallest_subnormal", "eps")}
  absorbing_sum = []
  for name in DTYPES:
    dtype = _NUMPY_DTYPES[name]
    info = ml_dtypes.finfo(dtype)
    top = np.nextafter(np.array(info.max, dtype), np.array(0, dtype))
    lo = np.log10(float(info.smallest_subnormal))
    hi = np.log10(float(top))
    with np.errstate(over="ignore"):  # 10**hi may round past float64's max
      grid = np.logspace(lo, hi, max(int((hi - lo) * density), 2))
    # Snap to the format, and keep both ends exactly.
    x = np.clip(grid, float(info.smallest_subnormal), float(top)).astype(dtype)
    x = np.unique(np.concatenate(
        [[np.array(info.smallest_subnormal, dtype)], x, [top]]))
    results[f"{name}_x"] = x.astype(np.float64)
    results[f"{name}_spacing"] = np.spacing(x).astype(np.float64)
    for key in limits:
      limits[key].append(float(getattr(info, key)))
    one = np.array(1, dtype)
    absorbing_sum.append(float(np.array(_ABSORBING[name], dtype) + one))
  results.update({key: np.array(value) for key, value in limits.items()})
  results["absorbing"] = np.array([_ABSORBING[name] for name in DTYPES])
  results["absorbing_sum"] = np.array(absorbing_sum)
  return results


def plot(results: dict[str, np.ndarray]):
  """(a) each format's range; (b) absolute and (c) relative spacing.

  Axes are in log10 units drawn on linear scales: float64's range (1e-324 to
  1e308) is beyond what a matplotlib log axis can set as limits.
  """
  from matplotlib.lines import Line2D
  from matplotlib.ticker import FuncFormatter

  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 4.9),
                          layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[0.62, 1],
                            width_ratios=[1, 1.15])
    ax_range = fig.add_subplot(grid[0, :])
    ax_abs = fig.add_subplot(grid[1, 0])
    ax_rel = fig.add_subplot(grid[1, 1])
    power_of_ten = FuncFormatter(lambda v, _: f"$10^{{{v:.0f}}}$")

    _draw_ranges(ax_range, results)
    for j, name in enumerate(DTYPES):
      log_x = np.log10(results[f"{name}_x"])
      log_spacing = np.log10(results[f"{name}_spacing"])
      color = plotting.DTYPE_COLORS[name]
      ax_abs.plot(log_x, log_spacing, color=color, lw=1.0, label=name)
      ax_rel.plot(log_x, log_spacing - log_x, color=color, lw=0.8,
                  label=name)
      for ax in (ax_abs, ax_rel):
        for key, style in (("max", "-"), ("tiny", "--"),
                           ("smallest_subnormal", ":")):
          ax.axvline(np.log10(results[key][j]), color=color, ls=style,
                     lw=0.7, alpha=0.8, zorder=0)

    ax_abs.set_xlim(-46.5, 40.5)
    ax_abs.set_ylim(-47, 40)
    ax_abs.set_title("absolute spacing")
    ax_abs.set_ylabel("gap to the next number, spacing($x$)")
    for axis in (ax_abs.xaxis, ax_abs.yaxis):
      axis.set_major_locator(MultipleLocator(20))
    _annotate_absorbing(ax_abs, results)

    ax_rel.set_xlim(-46.5, 40.5)
    ax_rel.set_ylim(-17, 0.8)
    ax_rel.set_title("relative spacing")
    ax_rel.set_ylabel("spacing($x$) / $x$")
    ax_rel.xaxis.set_major_locator(MultipleLocator(20))
    ax_rel.yaxis.set_major_locator(MultipleLocator(4))
    _annotate_eps(ax_rel, results)

    for ax in (ax_abs, ax_rel):
      ax.set_xlabel("magnitude $|x|$ (float64 continues past both ends)")
      ax.xaxis.set_major_formatter(power_of_ten)
      ax.yaxis.set_major_formatter(power_of_ten)
    ax_range.xaxis.set_major_formatter(power_of_ten)

    handles = [
        Line2D([], [], color="0.3", ls="-", lw=0.7, label="largest finite"),
        Line2D([], [], color="0.3", ls="--", lw=0.7, label="smallest normal"),
        Line2D([], [], color="0.3", ls=":", lw=0.7,
               label="smallest subnormal"),
    ]
    ax_rel.legend(handles=handles, loc="lower right", fontsize=6.5,
                  bbox_to_anchor=(1.0, 0.1))
    plotting.label_panels([ax_range, ax_abs, ax_rel])
  return fig


def _draw_ranges(ax, results):
  """One bar per format: subnormal range (light), normal range (solid)."""
  for j, name in enumerate(DTYPES):
    color = plotting.DTYPE_COLORS[name]
    sub, tiny, top = (np.log10(results[k][j])
                      for k in ("smallest_subnormal", "tiny", "max"))
    y = len(DTYPES) - 1 - j
    ax.barh(y, top - tiny, left=tiny, height=0.6, color=color)
    ax.barh(y, tiny - sub, left=sub, height=0.6, color=color, alpha=0.35)
    text = (f"{_sci(results['smallest_subnormal'][j])} (subnormal), "
            f"{_sci(results['tiny'][j])} ... {_sci(results['max'][j])}, "
            f"eps {_sci(results['eps'][j])}")
    if name == "float64":
      ax.text(0, y, text, ha="center", va="center", fontsize=6,
              color="white")
    else:
      ax.text(top + 6, y, text, ha="left", va="center", fontsize=6,
              color=color)
  ax.set_yticks(range(len(DTYPES)), list(reversed(DTYPES)))
  ax.tick_params(axis="y", length=0)
  ax.spines["left"].set_visible(False)
  ax.set_xlim(-335, 320)
  ax.set_ylim(-0.6, len(DTYPES) - 0.4)
  ax.xaxis.set_major_locator(MultipleLocator(50))
  ax.axvline(0.0, color="0.6", lw=0.6, zorder=0)
  ax.set_xlabel("magnitude $|x|$: below the bar a result is 0, above it inf")
  ax.set_title("range: subnormal (light) and normal (solid)")


def _annotate_eps(ax, results):
  """Writes eps on each format's flat normal range."""
  for j, name in enumerate(DTYPES):
    log_eps = np.log10(results["eps"][j])
    # At the format's 1.0, or on the visible stretch of float64's line;
    # float16's eps is within a decade of bfloat16's: write it underneath.
    x = -30.0 if name == "float64" else 0.0
    below = name == "float16"
    ax.annotate(f"{name} eps = {_sci(results['eps'][j])}", (x, log_eps),
                xytext=(0, -4 if below else 3), textcoords="offset points",
                fontsize=6, color=plotting.DTYPE_COLORS[name], ha="center",
                va="top" if below else "bottom")
  ax.annotate("subnormals: the\nrelative gap\ngrows to 1", (-41.0, -4.0),
              xytext=(-28, -10), fontsize=6, color="0.25", ha="center",
              va="center",
              arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"})


def _annotate_absorbing(ax, results):
  """x + 1 == x: where the spacing exceeds 2, adding 1 changes nothing."""
  lines = []
  for j, name in enumerate(DTYPES):
    base = results["absorbing"][j]
    total = results["absorbing_sum"][j]
    exponent = int(np.log2(base))
    lines.append(f"{name}: $2^{{{exponent}}}$ + 1 = {total:,.0f}")
  # Top left is empty: spacing grows with x, so no curve reaches there.
  ax.text(0.03, 0.97, "adding 1 changes nothing:\n" + "\n".join(lines),
          transform=ax.transAxes, fontsize=6, va="top", ha="left",
          color="0.15", bbox={"facecolor": "white", "edgecolor": "none",
                              "alpha": 0.85, "pad": 1.0})


def _sci(x: float) -> str:
  mantissa, exponent = f"{x:.1e}".split("e")
  return f"{mantissa}$\\times10^{{{int(exponent)}}}$"


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
