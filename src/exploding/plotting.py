"""Matplotlib drawing for the paper: one style, then the figures' building blocks.

The module is organised in sections, read top-down:

1. **Style** -- sizes, colours and rc settings shared by every figure:
   :func:`paper_style` (a context manager), :func:`use_style`,
   :func:`new_figure`, :func:`save_figure`, :func:`label_panels`.
2. **Maps and theory** -- gradient maps with theory contours, growth curves
   and spectra (to be added next to the style, using it).

Figures are built on :class:`matplotlib.figure.Figure` directly, never through
``pyplot``'s global figure manager: nothing is left open, no GUI backend is
needed, and a figure is saved through the Agg canvas whatever the backend.

Example:
  >>> from exploding import plotting
  >>> fig, ax = plotting.new_figure()
  >>> _ = ax.semilogy([1, 2, 3], [1e-3, 1.0, 1e3])
  >>> import os, tempfile
  >>> with tempfile.TemporaryDirectory() as folder:
  ...   paths = plotting.save_figure(fig, os.path.join(folder, "example"))
  ...   print(sorted(os.path.basename(p) for p in paths))  # .png and .pdf
  ['example.pdf', 'example.png']
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence

import matplotlib as mpl
from matplotlib.figure import Figure

__all__ = [
    "COLUMN_WIDTH",
    "FULL_WIDTH",
    "PALETTE",
    "DTYPE_COLORS",
    "DTYPE_MARKERS",
    "STYLE",
    "paper_style",
    "use_style",
    "new_figure",
    "save_figure",
    "label_panels",
]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


# --------------------------------------------------------------------------
# Style
# --------------------------------------------------------------------------

COLUMN_WIDTH = 3.4
"""Width in inches of one column of a two-column paper."""

FULL_WIDTH = 7.0
"""Width in inches of a figure spanning both columns."""

# Okabe & Ito (2008): distinguishable under the common colour-vision deficits
# and in greyscale print, which the default tab10 cycle is not.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: faint on white)
)

# One colour and marker per floating-point format, the same in every figure.
DTYPE_COLORS: dict[str, str] = {
    "float16": "#E69F00",
    "bfloat16": "#D55E00",
    "float32": "#0072B2",
    "float64": "#009E73",
}
DTYPE_MARKERS: dict[str, str] = {
    "float16": "^",
    "bfloat16": "s",
    "float32": "o",
    "float64": "D",
}

STYLE: dict[str, object] = {
    "figure.figsize": (COLUMN_WIDTH, 2.4),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "legend.handlelength": 1.6,
    "legend.borderaxespad": 0.3,
    "axes.prop_cycle": mpl.cycler(color=list(PALETTE)),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "axes.grid": False,
    "axes.titlelocation": "left",
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "xtick.direction": "out",
    "ytick.direction": "out",
    "image.cmap": "RdBu_r",
    "pdf.fonttype": 42,  # embed TrueType: text stays editable and searchable
    "ps.fonttype": 42,
    "mathtext.default": "regular",
}
"""The rc settings of :func:`paper_style`. Diverging ``RdBu_r`` is the default
colour map because log growth has a meaningful zero (vanishing below,
exploding above)."""


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
  """Applies :data:`STYLE` inside a ``with`` block, restoring rc afterwards.

  Build *and* save a figure inside the block: matplotlib reads some settings
  (tick label sizes) only when drawing.

  Example:
    >>> with paper_style():
    ...   fig, ax = new_figure()
  """
  with mpl.rc_context(STYLE):
    yield


def use_style() -> None:
  """Applies :data:`STYLE` globally, e.g. at the top of a notebook."""
  mpl.rcParams.update(STYLE)


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float | str = "column",
    height: float | None = None,
    **subplot_kw,
) -> tuple[Figure, object]:
  """Creates a figure with a grid of axes, sized for the paper.

  Args:
    nrows: rows of axes.
    ncols: columns of axes.
    width: ``"column"`` (:data:`COLUMN_WIDTH`), ``"full"``
      (:data:`FULL_WIDTH`) or a width in inches.
    height: inches; default 2.4 per row (2.2 per row beyond the first).
    **subplot_kw: passed to :meth:`Figure.subplots` (e.g. ``sharex=True``).

  Returns:
    ``(fig, axes)``; ``axes`` is one ``Axes`` for a 1x1 grid, else an array,
    as in :meth:`Figure.subplots`.
  """
  if isinstance(width, str):
    if width not in ("column", "full"):
      raise ValueError(
          f"width must be 'column', 'full' or inches, got {width!r}")
    width = COLUMN_WIDTH if width == "column" else FULL_WIDTH
  if height is None:
    height = 2.4 + 2.2 * (nrows - 1)
  with paper_style():
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **subplot_kw)
  return fig, axes


def save_figure(
    fig: Figure,
    path_stem: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[str]:
  """Writes ``fig`` to ``path_stem.png`` and ``path_stem.pdf``.

  Each file is written to a temporary name and moved into place, so an
  interrupted run never leaves a truncated figure behind.

  Args:
    fig: the figure.
    path_stem: the path without extension; parent directories are created.
    formats: file extensions to write.
    dpi: resolution of raster formats.

  Returns:
    The paths written, one per format.
  """
  stem = os.fspath(path_stem)
  parent = os.path.dirname(stem)
  if parent:
    os.makedirs(parent, exist_ok=True)
  paths = []
  with paper_style():
    for fmt in formats:
      path = f"{stem}.{fmt}"
      tmp = f"{stem}.tmp-{os.getpid()}.{fmt}"
      try:
        # No creation date in PDFs: regenerated figures are byte-identical.
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
        os.replace(tmp, path)
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
      paths.append(path)
  return paths


def label_panels(axes, *, start: str = "a") -> None:
  """Prefixes each axes' title with a bold panel letter: a, b, ...

  The letter joins the (left-aligned) title on one line, so the two never
  collide; an axes without a title gets the letter alone.

  Args:
    axes: an iterable of ``Axes`` (any array shape; flattened row-major).
    start: the first letter.
  """
  flat = list(getattr(axes, "flat", axes))
  for i, ax in enumerate(flat):
    letter = chr(ord(start) + i)
    title = ax.get_title(loc="left")
    ax.set_title(f"$\\bf{{{letter}}}$  {title}" if title else
                 f"$\\bf{{{letter}}}$", loc="left")


# --------------------------------------------------------------------------
# Maps and theory
# --------------------------------------------------------------------------
# Gradient maps (log growth over weight scale x length) with theory contours,
# growth curves and Lyapunov spectra go here, drawing with the style above.

from exploding._plot_maps import (draw_growth_map, draw_theory_lines,  # noqa: E402
                                  map_mean_log10, plot_growth_map, plot_rate)

__all__ += ["draw_growth_map", "draw_theory_lines", "map_mean_log10",
            "plot_growth_map", "plot_rate"]
