"""Gradient maps and theory on the same axes (re-exported by ``plotting``).

A map is drawn as log10 of the seed-mean growth over weight scale (x) and
steps or depth (y), on a diverging colour scale centred at zero: blue where
gradients vanish, red where they explode, grey where the forward pass
overflowed (the growth there is undefined, never a number). Vertical lines
mark the measured critical scale and any theory line (mean-field edge of
chaos, Pascanu's 1/gamma bound), so prediction and measurement share axes.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
from matplotlib import colors

__all__ = ["plot_growth_map", "draw_growth_map", "draw_theory_lines",
           "plot_rate", "map_mean_log10"]

_THEORY_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))


def map_mean_log10(m) -> np.ndarray:
  """``(n_scales, length)`` log10 of the growth, averaged over seeds in log
  space; NaN where any seed overflowed (invalid)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.mean(np.asarray(m.log_growth, np.float64), axis=-1) / np.log(10)


def draw_growth_map(ax, m, *, vmax: float | None = None, critical: bool = True,
                    theory: Mapping[str, float] | None = None,
                    colorbar: bool = True, contour: bool = True,
                    legend: bool = True):
  """Draws a ``GradientMap`` on ``ax``; returns the image artist.

  Args:
    ax: a matplotlib Axes.
    m: the ``GradientMap``.
    vmax: colour limit in decades (default: the 98th percentile of |values|,
      at most 30).
    critical: draw the measured critical scale (``m.critical_scale()``).
    theory: label -> weight scale of a predicted vertical line.
    colorbar: add a colour bar labelled in decades.
    contour: draw the growth-equals-one contour (log10 = 0).
    legend: add a legend for the vertical lines.
  """
  if len(m.axes) != 1:
    raise ValueError(f"draw one grid axis at a time; this map has axes "
                     f"{list(m.axes)}: pick the others with m.sel(...)")
  (name, g), = m.axes.items()
  z = map_mean_log10(m).T                                  # (length, points)
  finite = np.abs(z[np.isfinite(z)])
  if vmax is None:
    vmax = float(np.clip(np.percentile(finite, 98) if finite.size else 1,
                         1, 30))
  cmap = _cmap()
  cmap.set_bad("0.6")
  g, steps = np.asarray(g), np.asarray(m.steps)
  image = ax.pcolormesh(g, steps, np.ma.masked_invalid(z), shading="nearest",
                        cmap=cmap, norm=colors.TwoSlopeNorm(0, -vmax, vmax),
                        rasterized=True)
  if contour and np.isfinite(z).sum() > 4 and len(g) > 1 and len(steps) > 1:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      ax.contour(g, steps, np.nan_to_num(z, nan=vmax), levels=[0.0],
                 colors="k", linewidths=0.6)
  ax.set_xlabel(_AXIS_LABELS.get(name, name.replace("_", " ")))
  ax.set_ylabel("depth $L$ (layers)" if m.config.get("model") == "mlp"
                else "sequence length $T$ (steps)")
  if critical:
    gc = m.critical_scale(axis=name)
    if np.isfinite(gc):
      ax.axvline(gc, color="k", lw=1.0, label=f"measured crossing = {gc:.2f}"
                 if name != "weight_scale" else f"measured $g_c$ = {gc:.2f}")
  draw_theory_lines(ax, theory)
  if legend and ax.get_legend_handles_labels()[0]:
    ax.legend(loc="upper left", fontsize=6, frameon=True, framealpha=0.8)
  if colorbar:
    cb = ax.figure.colorbar(image, ax=ax, pad=0.02)
    cb.set_label("$\\log_{10}$ gradient growth")
  return image


_AXIS_LABELS = {"weight_scale": "weight scale $g$ ($\\sigma_w$)",
                "bias_scale": "bias scale $\\sigma_b$",
                "forget_bias": "forget bias $b_f$"}


def draw_theory_lines(ax, theory: Mapping[str, float] | None) -> None:
  """Vertical dashed lines, one per ``label -> weight scale``."""
  for i, (label, value) in enumerate((theory or {}).items()):
    if value is not None and np.isfinite(value):
      ax.axvline(value, color="k", lw=0.9,
                 ls=_THEORY_STYLES[i % len(_THEORY_STYLES)],
                 label=f"{label} = {value:.2f}")


def plot_growth_map(m, *, theory: Mapping[str, float] | None = None,
                    title: str | None = None, **kwargs: Any):
  """A one-panel figure of ``m`` (see ``draw_growth_map``).

  Example:
    >>> import exploding as ex
    >>> m = ex.sweep("rnn", weight_scales=[0.5, 1.0, 2.0], length=16,
    ...              seeds=1, hidden=8, progress=False)
    >>> fig = ex.plotting.plot_growth_map(m)
  """
  from exploding import plotting
  fig, ax = plotting.new_figure(height=2.6)
  with plotting.paper_style():
    draw_growth_map(ax, m, theory=theory, **kwargs)
    c = m.config
    ax.set_title(title or f"{c.get('model')} {c.get('activation', '')}, "
                 f"{c.get('method')}, width {c.get('hidden')}")
  return fig


def plot_rate(ax, m, *, label: str | None = None,
              theory: Any = None, theory_label: str = "mean field",
              **line_kwargs):
  """Draws ``m.rate()`` against weight scale, with a theory curve
  ``theory(weight_scales) -> rate`` if given."""
  g = np.asarray(m.weight_scales)
  line, = ax.plot(g, m.rate(), marker="o", ms=2.5, label=label, **line_kwargs)
  if theory is not None:
    gg = np.linspace(g.min(), g.max(), 200)
    ax.plot(gg, theory(gg), color=line.get_color(), ls="--", lw=0.9,
            label=f"{theory_label}" if label is None
            else f"{label}: {theory_label}")
  ax.axhline(0, color="0.5", lw=0.5)
  ax.set_xlabel("weight scale $g$")
  ax.set_ylabel("growth rate (nats / step)")
  return line


def _cmap():
  import matplotlib
  return matplotlib.colormaps["RdBu_r"].copy()
