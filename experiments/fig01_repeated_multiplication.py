"""Repeated multiplication: w**T leaves float range within tens of steps.

The scalar picture of vanishing and exploding gradients: a product of T
factors w grows like ``exp(T log w)``. The exact curve is computed in log
space (``T log10 w``), so it never overflows; the same product computed
natively, one multiplication at a time, in float16, bfloat16 and float32,
becomes ``inf`` or ``0`` where the curve crosses that format's limits
(after the subnormals, for underflow). Those steps are marked.

Run: ``python experiments/fig01_repeated_multiplication.py [--quick]``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from exploding import plotting

QUICK = {"max_length": 60, "factors": [8.0, 2.0, 1.1, 0.9, 0.5]}
FULL = {"max_length": 200, "factors": [8.0, 2.0, 1.1, 0.9, 0.5]}

ALLOW_NONFINITE = {"native_final"}  # overflowed products are inf, by design
CACHE_VERSION = 1  # bump when compute() changes

DTYPES = ("float16", "bfloat16", "float32")
_NUMPY_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
                 "float32": np.float32}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Exact log10 w**T and the steps at which native products overflow.

  Args:
    config: ``max_length`` (int, T runs 1..max_length) and ``factors``
      (list of w > 0).

  Returns:
    ``steps``: (T,) int, 1..max_length. ``factors``: (n_w,).
    ``log10_power``: (n_w, T), ``T * log10(w)``.
    ``native_inf_step``, ``native_zero_step``: (n_w, n_dtypes) int, the first
    T at which the natively computed product is ``inf`` / exactly 0 in each
    of ``DTYPES`` (-1: not within max_length).
    ``native_final``: (n_w, n_dtypes), the native product at T = max_length
    (may be ``inf`` or 0: see ``ALLOW_NONFINITE``).
    ``log10_max``, ``log10_tiny``, ``log10_subnormal``: (n_dtypes,), log10 of
    the largest finite, smallest normal and smallest subnormal number.
    ``examples_w``, ``examples_t``, ``examples_value``: a few exact products
    ``w**T`` (float64) to annotate.
  """
  length = int(config["max_length"])
  factors = np.asarray(config["factors"], dtype=np.float64)
  steps = np.arange(1, length + 1)
  log10_power = steps[None, :] * np.log10(factors)[:, None]

  inf_step = np.full((len(factors), len(DTYPES)), -1, dtype=np.int64)
  zero_step = np.full_like(inf_step, -1)
  final = np.zeros(inf_step.shape, dtype=np.float64)
  for j, name in enumerate(DTYPES):
    dtype = _NUMPY_DTYPES[name]
    w = factors.astype(dtype)
    value = np.ones_like(w)
    with np.errstate(over="ignore", under="ignore"):
      for t in steps:
        value = (value * w).astype(dtype)
        newly_inf = np.isinf(value.astype(np.float64)) & (inf_step[:, j] < 0)
        newly_zero = (value.astype(np.float64) == 0) & (zero_step[:, j] < 0)
        inf_step[newly_inf, j] = t
        zero_step[newly_zero, j] = t
    final[:, j] = value.astype(np.float64)

  finfos = [ml_dtypes.finfo(_NUMPY_DTYPES[name]) for name in DTYPES]
  examples_w = np.array([2.0, 0.5, 2.0, 0.5])
  examples_t = np.array([32, 32, 50, 50])
  return {
      "steps": steps,
      "factors": factors,
      "log10_power": log10_power,
      "native_inf_step": inf_step,
      "native_zero_step": zero_step,
      "native_final": final,
      "log10_max": np.log10([float(f.max) for f in finfos]),
      "log10_tiny": np.log10([float(f.tiny) for f in finfos]),
      "log10_subnormal": np.log10(
          [float(f.smallest_subnormal) for f in finfos]),
      "examples_w": examples_w,
      "examples_t": examples_t,
      "examples_value": examples_w ** examples_t,
  }


def plot(results: dict[str, np.ndarray]):
  """Two panels: all of T (float32/bfloat16 limits), and a zoom (float16)."""
  fig, (ax_all, ax_zoom) = plotting.new_figure(
      1, 2, width="full", height=3.1, gridspec_kw={"width_ratios": [1.25, 1]})
  steps = results["steps"]
  factors = results["factors"]
  colors = {w: _factor_color(w) for w in factors}
  zoom_t = min(60, int(steps[-1]))
  zoom_y = 17.0

  with plotting.paper_style():
    for ax in (ax_all, ax_zoom):
      ax.axhline(0.0, color="0.8", lw=0.6, zorder=0)
      for w, curve in zip(factors, results["log10_power"]):
        ax.plot(steps, curve, color=colors[w], label=f"w = {w:g}")
      _draw_native_events(ax, results)
    _draw_limits(ax_all, results, ["float32", "bfloat16"])
    _draw_limits(ax_zoom, results, ["float16"])

    ax_all.set_xlim(0, steps[-1] * 1.16)
    lo = min(results["log10_power"].min(), results["log10_subnormal"][2]) - 22
    hi = results["log10_power"].max() + 12
    ax_all.set_ylim(lo, hi)
    for w, curve in zip(factors, results["log10_power"]):
      ax_all.text(steps[-1] * 1.02, curve[-1], f"w = {w:g}",
                  color=colors[w], va="center", fontsize=7)
    ax_all.set_title("all steps; float32 and bfloat16 limits")

    ax_zoom.set_xlim(0, zoom_t)
    ax_zoom.set_ylim(-zoom_y, zoom_y)
    ax_zoom.set_title("first steps; float16 limits")
    _annotate_examples(ax_zoom, results, colors)

    for ax in (ax_all, ax_zoom):
      ax.set_xlabel("number of factors $T$")
      ax.set_ylabel("$\\log_{10}\\, w^T$ (exact, computed in log space)")
    ax_zoom.legend(handles=_legend_handles(), loc="upper left", fontsize=6.5,
                   bbox_to_anchor=(1.0, 1.0))
    _annotate_rounding(ax_zoom, results)
    plotting.label_panels([ax_all, ax_zoom])
  return fig


def _factor_color(w: float) -> str:
  """Purples for growing factors, greens for shrinking: apart from dtypes."""
  if w > 1:
    return {8.0: "#3F007D", 2.0: "#6A51A3"}.get(float(w), "#9E9AC8" if w < 1.5
                                                else "#6A51A3")
  return {0.5: "#006D2C", 0.9: "#74C476"}.get(float(w), "#41AB5D")


def _draw_limits(ax, results, names):
  """Lines at a format's largest, smallest normal and smallest subnormal."""
  for name in names:
    j = DTYPES.index(name)
    color = plotting.DTYPE_COLORS[name]
    for key, style in (("log10_max", "-"), ("log10_tiny", "--"),
                       ("log10_subnormal", ":")):
      ax.axhline(results[key][j], color=color, ls=style, lw=0.8, zorder=1)
  color = plotting.DTYPE_COLORS[names[0]]
  if names == ["float16"]:
    labels = [("log10_max", "float16 max 65,504", -1.5, "top"),
              ("log10_tiny", "smallest normal 6.1$\\times10^{-5}$", -1.5,
               "top"),
              ("log10_subnormal", "smallest subnormal 6.0$\\times10^{-8}$",
               -1.5, "top")]
    for key, text, dy, va in labels:
      ax.annotate(text, (1, results[key][0]),
                  xycoords=("axes fraction", "data"), xytext=(-2, dy),
                  textcoords="offset points", fontsize=6, color=color,
                  va=va, ha="right")
    return
  # float32 and bfloat16 share the exponent range, not the subnormals. The
  # labels sit where no curve passes: right under the max line (left of it
  # w = 8 climbs), at the bottom left under the subnormal lines.
  ax.annotate("max: float32 3.40$\\times10^{38}$\nbfloat16 3.39$\\times10^{38}$",
              (1, results["log10_max"].max()),
              xycoords=("axes fraction", "data"), xytext=(-2, -2),
              textcoords="offset points", fontsize=6, color=color, va="top",
              ha="right")
  ax.annotate("smallest normal 1.2$\\times10^{-38}$ (both)\n"
              "smallest subnormal: bfloat16 9.2$\\times10^{-41}$,\n"
              "float32 1.4$\\times10^{-45}$",
              (0, results["log10_subnormal"].min()),
              xycoords=("axes fraction", "data"), xytext=(3, -3),
              textcoords="offset points", fontsize=6, color=color, va="top",
              ha="left")


def _annotate_rounding(ax, results):
  """Native products that neither overflow nor match the exact value."""
  factors = list(results["factors"])
  t = int(results["steps"][-1])
  notes = []
  if 0.9 in factors:
    i = factors.index(0.9)
    value = results["native_final"][i, DTYPES.index("float16")]
    if 0 < value < 1e-6:
      notes.append(f"native float16 $0.9^{{{t}}}$\nsticks at {_sci(value)}\n"
                 f"(exact {_sci(0.9 ** t)}):\nrounds up, never to 0")
  if 1.1 in factors:
    i = factors.index(1.1)
    value = results["native_final"][i, DTYPES.index("bfloat16")]
    notes.append(f"native bfloat16 $1.1^{{{t}}}$\n= {_sci(value)}"
                 f" (exact {_sci(1.1 ** t)}):\n1.1 is stored as 1.1016")
  if notes:
    # Under the legend, beside the zoomed panel.
    ax.text(1.04, 0.36, "\n\n".join(notes), transform=ax.transAxes,
            fontsize=6, va="top", ha="left", color="0.2", linespacing=1.3)


def _draw_native_events(ax, results):
  """Markers where the native product first becomes inf or 0."""
  for j, name in enumerate(DTYPES):
    for key in ("native_inf_step", "native_zero_step"):
      for i, w in enumerate(results["factors"]):
        t = int(results[key][i, j])
        if t < 1:
          continue
        y = results["log10_power"][i, t - 1]
        ax.plot(t, y, ls="none", marker=plotting.DTYPE_MARKERS[name],
                markersize=6, markerfacecolor="none",
                markeredgecolor=plotting.DTYPE_COLORS[name],
                markeredgewidth=1.1, zorder=4, clip_on=True)


def _annotate_examples(ax, results, colors):
  """Labels 2**32, 0.5**32, 2**50, 0.5**50 on their curves."""
  offsets = {(2.0, 32): (4, -18), (0.5, 32): (-48, -14),
             (2.0, 50): (-52, 4), (0.5, 50): (-54, -10)}
  for w, t, value in zip(results["examples_w"], results["examples_t"],
                         results["examples_value"]):
    if t > ax.get_xlim()[1]:
      continue
    text = (f"${w:g}^{{{t}}}$ = {value:,.0f}" if value >= 1e9 and value < 1e10
            else f"${w:g}^{{{t}}}$ ≈ {_sci(value)}")
    ax.plot(t, np.log10(value), "o", color=colors[w], markersize=3.5,
            zorder=5)
    ax.annotate(text, (t, np.log10(value)),
                xytext=offsets.get((float(w), int(t)), (-40, 6)),
                textcoords="offset points", fontsize=6.5, color="0.15",
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"})


def _sci(x: float) -> str:
  mantissa, exponent = f"{x:.1e}".split("e")
  return f"{mantissa}$\\times10^{{{int(exponent)}}}$"


def _legend_handles():
  from matplotlib.lines import Line2D

  handles = [
      Line2D([], [], color="0.3", ls="-", lw=0.8, label="largest finite"),
      Line2D([], [], color="0.3", ls="--", lw=0.8, label="smallest normal"),
      Line2D([], [], color="0.3", ls=":", lw=0.8, label="smallest subnormal"),
  ]
  for name in DTYPES:
    handles.append(Line2D(
        [], [], ls="none", marker=plotting.DTYPE_MARKERS[name],
        markerfacecolor="none", markeredgecolor=plotting.DTYPE_COLORS[name],
        markeredgewidth=1.1, markersize=6,
        label=f"native {name}\nbecomes inf / 0"))
  return handles


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
