"""A training run's per-layer gradient norms beside a map's prediction
(re-exported by ``monitor``).

Layer ``j`` of ``L`` (``h_(j+1) = phi(W_j h_j)``) has the weight gradient
``dL/dW_j = (phi'(z_j) * dL/dh_(j+1)) h_j^T``: the gradient backprop brought
down ``f = L - 1 - j`` layers from the output, ``dL/dh_(j+1) = J_(j+2)^T ..
J_L^T dL/dh_L``, times the forward activations entering the layer. So, up
to the ``phi'`` factor, about constant over depth once the activations are
stationary (mean field, Poole et al. 2016),

  log ||dL/dW_j|| - log ||dL/dW_(L-1)||
      ~ log ||u J_L .. J_(j+2)|| + log ||h_j|| - log ||h_(L-1)||,

the first term a ``vjp`` map's ``log_growth[f - 1]`` (0 for ``f = 0``), the
others its ``log_state_norm[j - 1] - log_state_norm[L - 2]``. The input's
norm ``||h_0||`` is not in a map, so the first layer has no prediction.
Where the forward pass shrinks as fast as backprop does (the ordered phase
without bias) the two cancel and the weight gradients stay level even
though backprop vanishes.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

__all__ = ["plot_monitor"]


def plot_monitor(history: Any, gradient_map: Any = None, *,
                 scale: float | None = None,
                 layers: Sequence[str] | None = None):
  """Draws a run's per-layer gradient log norms over steps and, given a map,
  their profile over depth beside the growth the map predicts.

  Args:
    history: a ``MonitorHistory`` (or an optimiser state holding one
      monitor).
    gradient_map: optional ``GradientMap`` measured with ``method="vjp"``
      on the same model (``length`` = the number of layers), with one grid
      axis (pick the others with ``m.sel(...)``).
    scale: the run's value on that axis (nearest grid point); may be
      omitted when the axis has one value.
    layers: leaf names of the layers' weights, input to output (default:
      the leaves named ``.../kernel``, in natural order of their paths, or
      every leaf if none is).

  Returns:
    A matplotlib ``Figure``: (a) ``log ||dL/dW_j||`` per layer and the
    global norm over steps; (b), with a map, each layer's log norm minus
    the output layer's against the backprop factors between them, at the
    first and the last recorded step, and the map's prediction (module
    docstring; a map measures the network as drawn, so compare it with the
    first step), median over seeds (band: min-max over seeds).
  """
  from exploding import plotting
  from exploding.monitor import MonitorHistory, monitor_history
  if not isinstance(history, MonitorHistory):
    history = monitor_history(history)
  names = list(history.leaf_names)
  if layers is None:
    layers = sorted((n for n in names if n.split("/")[-1] == "kernel"),
                    key=_natural) or names
  unknown = [n for n in layers if n not in names]
  if unknown:
    raise ValueError(f"layers {unknown} are not leaves of the monitored "
                     f"params; leaves: {names}")
  if not len(history.step):
    raise ValueError("the monitor has recorded no steps yet")
  logs = history.leaf_log_norm[:, [names.index(n) for n in layers]]
  predicted = None
  if gradient_map is not None:
    predicted, label = _predicted(gradient_map, scale, len(layers))

  fig, axes = plotting.new_figure(1, 1 if predicted is None else 2,
                                  width="full" if predicted is not None
                                  else "column")
  ax = axes if predicted is None else axes[0]
  with plotting.paper_style():
    colors = _layer_colors(len(layers))
    for j, name in enumerate(layers):
      ax.plot(history.step, logs[:, j], color=colors[j], lw=0.9,
              label=name if len(layers) <= 8 or j in (0, len(layers) - 1)
              else None)
    ax.plot(history.step, history.log_norm, color="k", lw=1.2, ls="--",
            label="global")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"$\log \|\partial L / \partial W\|$ (nats)")
    ax.set_title("gradient norm per layer")
    ax.legend(fontsize=6, ncol=2)
    if predicted is not None:
      _draw_profile(axes[1], history.step, logs, predicted, label)
      plotting.label_panels(axes)
  return fig


def _predicted(m, scale, n_layers):
  """``(n_layers, seeds)`` predicted log norm of each layer's weight
  gradient relative to the output layer's, by backprop factors ``f`` (NaN
  for the first layer), and a label naming the grid point."""
  if m.config.get("method") != "vjp":
    raise ValueError(f"gradient_map must be measured with method='vjp' "
                     f"(what backprop sees), got {m.config.get('method')!r}")
  if len(m.axes) > 1:
    raise ValueError(f"gradient_map has axes {list(m.axes)}: pick all but "
                     f"one with m.sel(...)")
  growth = np.asarray(m.log_growth, np.float64)
  state = np.asarray(m.log_state_norm, np.float64)
  label = "map"
  if m.axes:
    (name, values), = m.axes.items()
    values = np.asarray(values, np.float64)
    if scale is None:
      if len(values) != 1:
        raise ValueError(f"give scale: the map's {name} axis has "
                         f"{len(values)} values")
      i = 0
    else:
      _check_scale(scale)
      i = int(np.argmin(np.abs(values - scale)))
    growth, state = growth[i], state[i]
    label = f"map, {name.replace('_', ' ')} {values[i]:.3g}"
  if growth.shape[0] != n_layers:
    raise ValueError(f"gradient_map has length {growth.shape[0]}; measure "
                     f"it on the same model, {n_layers} layers deep")
  back = np.concatenate([np.zeros((1, growth.shape[-1])), growth[:-1]])
  # forward: log ||h_j|| - log ||h_(L-1)|| for j = L-1-f; h_0 is not known
  fwd = np.full_like(back, np.nan)
  if n_layers > 1:
    fwd[:-1] = state[n_layers - 2::-1] - state[n_layers - 2]
  return back + fwd, label


def _draw_profile(ax, steps, logs, predicted, label):
  from matplotlib.ticker import MaxNLocator
  factors = np.arange(logs.shape[1])
  rel = (logs - logs[:, -1:])[:, ::-1]       # column f: f factors back
  for row, style, fill in ((0, "o-", "full"), (-1, "o--", "none")):
    ax.plot(factors, rel[row], style, color="#0072B2", ms=3, fillstyle=fill,
            label=f"run, step {steps[row]}")
  lo, mid, hi = (np.min(predicted, -1), np.median(predicted, -1),
                 np.max(predicted, -1))   # NaN for the first layer
  ax.fill_between(factors, lo, hi, color="#D55E00", alpha=0.25, lw=0)
  ax.plot(factors, mid, "-", color="#D55E00",
          label=f"{label}, {predicted.shape[-1]} seeds")
  ax.set_xlabel("layers back from the output (backprop factors)")
  ax.set_ylabel("log norm - output layer's (nats)")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_title("per-layer profile vs map")
  ax.legend(fontsize=6)


def _check_scale(scale):
  if isinstance(scale, bool) or not np.isscalar(scale) or not np.isfinite(
      float(scale)):
    raise ValueError(f"scale must be a finite number, got {scale!r}")


def _layer_colors(n):
  from matplotlib import colormaps
  cmap = colormaps["viridis"]
  return [cmap(0.9 * j / max(n - 1, 1)) for j in range(n)]


def _natural(name):
  """``"Dense_10"`` after ``"Dense_2"``."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
