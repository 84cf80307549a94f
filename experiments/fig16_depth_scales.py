"""Depth scales measured: how fast lengths and correlations forget the input.

In a wide tanh MLP (weights ``N(0, sigma_w^2 / n)``, biases ``N(0,
sigma_b^2)``) the squared length q^l of a pre-activation and the
correlation c^l between two inputs' pre-activations approach their fixed
points q*, c* geometrically, ``|q^l - q*| ~ exp(-l / xi_q)`` and ``|c^l -
c*| ~ exp(-l / xi_c)`` (Schoenholz et al. 2017, eqs. 4 and 8-9). xi_q stays
a layer or two everywhere; xi_c diverges on the edge of chaos (chi_1 = 1),
which is why only near-critical networks pass information (and gradients)
through many layers. Theory: ``ex.theory.depth_scale_q`` and
``depth_scale_c``.

Measured here on finite networks (``ex.mlp.init``; the forward pass runs
``ex.mlp.step`` over ``ex.mlp.layers``, keeping every layer's activations
h^l = tanh(z^l)), over sigma_w^2 at two sigma_b^2, per seed:

* xi_q: inputs of one direction at two lengths, ``||x||^2 / n = p* (1 +-
  eps)`` (``p* = (q* - sigma_b^2) / sigma_w^2``, the activations' mean
  square at the fixed point); the gap between their activations' mean
  squares, ``p_+^l - p_-^l``, shrinks by ``V'(q*) = exp(-1 / xi_q)`` per
  layer. No fixed point enters the fit.
* xi_c: pairs of inputs at length p* whose layer-1 correlation is ``c* -
  delta``; the post-activation correlation approaches its fixed point
  ``(c* q* - sigma_b^2) / (q* - sigma_b^2)`` (1 in the ordered phase, where
  ``1 - c`` is computed as ``||a/|a| - b/|b|||^2 / 2``, exact to float
  rounding); the gap shrinks by ``chi_c = exp(-1 / xi_c)`` per layer.

The rate is a least-squares slope of the log of the seed-mean gap from
layer 1 until the gap first falls below ``noise_factor`` standard errors
over seeds (or ``1e-5``, float32's reach); ``xi = -1 / slope``. Spreads:
90% percentile bootstrap over seeds (seeds resampled, curve averaged,
refitted). On the edge of chaos xi_c exceeds the depth and the gap barely
moves: those fits are reported, with their (wide) intervals, not hidden.

References:
  Schoenholz, Gilmer, Ganguli, Sohl-Dickstein. Deep information
  propagation. ICLR 2017.
  Poole, Lahiri, Raghu, Sohl-Dickstein, Ganguli. Exponential expressivity in
  deep neural networks through transient chaos. NeurIPS 2016.

Run: ``python experiments/fig16_depth_scales.py [--quick]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"width": 256, "depth": 24, "seeds": 8, "sigma_w2": [0.7, 1.2, 3.5],
         "sigma_b2": [0.05], "q_directions": 4, "c_pairs": 8, "eps": 0.2,
         "delta": 0.25, "delta_ordered": 0.02, "noise_factor": 3.0, "key": 0}
FULL = {"width": 256, "depth": 48, "seeds": 8,
        "sigma_w2": [0.5, 0.75, 1.0, 1.25, 1.5, 1.65, 1.9, 2.1, 2.3, 2.7,
                     3.0, 3.5, 4.0],
        "sigma_b2": [0.05, 0.3], "q_directions": 4, "c_pairs": 16,
        "eps": 0.2, "delta": 0.25, "delta_ordered": 0.02,
        "noise_factor": 3.0, "key": 0}
CACHE_VERSION = 1
RESAMPLES = 1000
LEVEL = 0.9

# Fits that got fewer than 3 usable layers are NaN; theory xi_c is inf on the
# critical line.
ALLOW_NONFINITE = {"xi_q", "xi_q_low", "xi_q_high", "xi_c", "xi_c_low",
                   "xi_c_high", "theory_xi_c", "gap_q", "gap_c"}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Measured and predicted xi_q, xi_c over (sigma_b^2, sigma_w^2).

  Args:
    config: ``width`` (n), ``depth`` (L), ``seeds``, ``sigma_w2`` and
      ``sigma_b2`` (grids), ``q_directions`` (input directions for xi_q),
      ``c_pairs`` (input pairs for xi_c), ``eps``, ``delta`` (initial
      offsets), ``noise_factor``, ``key`` (int).

  Returns:
    ``sigma_w2``: (nw,). ``sigma_b2``: (nb,). ``curve_sigma_w2``,
    ``curve_xi_q``, ``curve_xi_c``: (nb, 175) theory curves for the plot.
    ``xi_q``, ``xi_c`` and their ``_low``, ``_high``: (nb, nw) layers.
    ``theory_xi_q``, ``theory_xi_c``: (nb, nw). ``critical_sigma_w2``:
    (nb,). ``gap_q``, ``gap_c``: (nb, nw, L, seeds) per-seed gaps (signed).
    ``width``: ().
    ``fit_layers_q``, ``fit_layers_c``: (nb, nw) layers in each fit.
  """
  n, L, seeds = (int(config[k]) for k in ("width", "depth", "seeds"))
  sw2 = np.asarray(config["sigma_w2"], np.float64)
  sb2 = np.asarray(config["sigma_b2"], np.float64)
  if np.any(sw2 <= 0) or np.any(sb2 < 0):
    raise ValueError(f"sigma_w2 must be > 0 and sigma_b2 >= 0, got {sw2}, "
                     f"{sb2}")
  key = jax.random.key(int(config["key"]))
  gap_q = np.full((len(sb2), len(sw2), L, seeds), np.nan)
  gap_c = np.full_like(gap_q, np.nan)
  for s in range(seeds):
    k_init, k_x = jax.random.split(jax.random.fold_in(key, s))
    unit = ex.mlp.init(k_init, n, L, activation="tanh")
    dirs = _orthonormal(k_x, 2 * int(config["c_pairs"])
                        + int(config["q_directions"]), n)
    for i, b2 in enumerate(sb2):
      for j, w2 in enumerate(sw2):
        p = unit.replace(weight_scale=jnp.float32(np.sqrt(w2)),
                         bias_scale=jnp.float32(np.sqrt(b2)))
        x, n_q = _inputs(dirs, float(w2), float(b2), n, config)
        h = np.asarray(_layer_states(p, jnp.asarray(x, jnp.float32)),
                       np.float64)                      # (L, batch, n)
        gap_q[i, j, :, s], gap_c[i, j, :, s] = _gaps(h, n_q, float(w2),
                                                     float(b2))
  fits = {name: [[_fit(g, float(config["noise_factor"])) for g in row]
                 for row in gaps]
          for name, gaps in (("q", gap_q), ("c", gap_c))}
  out = {"sigma_w2": sw2, "sigma_b2": sb2, "gap_q": gap_q, "gap_c": gap_c,
         "width": np.array(n),
         "critical_sigma_w2": np.array(ex.theory.critical_sigma_w2(
             "tanh", sb2), np.float64).reshape(-1),
         "theory_xi_q": np.array([ex.theory.depth_scale_q("tanh", sw2, b)
                                  for b in sb2]),
         "theory_xi_c": np.array([ex.theory.depth_scale_c("tanh", sw2, b)
                                  for b in sb2])}
  curves = [_theory_curves(sw2.min(), sw2.max(), b) for b in sb2]
  out["curve_sigma_w2"] = np.stack([c[0] for c in curves])
  out["curve_xi_q"] = np.stack([c[1] for c in curves])
  out["curve_xi_c"] = np.stack([c[2] for c in curves])
  for name, f in fits.items():
    for m, field in enumerate(("", "_low", "_high", "fit_layers")):
      key_name = (f"fit_layers_{name}" if field == "fit_layers"
                  else f"xi_{name}{field}")
      out[key_name] = np.array([[fit[m] for fit in row] for row in f])
  return out


def plot(results: dict[str, np.ndarray]):
  """(a) the gaps over depth at one sigma_b^2; (b) xi_q and (c) xi_c over
  sigma_w^2, measured against theory, at each sigma_b^2."""
  fig, axes = plotting.new_figure(1, 3, width="full", height=2.8)
  ax_g, ax_q, ax_c = axes
  sw2, sb2 = results["sigma_w2"], results["sigma_b2"]
  L = results["gap_c"].shape[-2]
  layers = np.arange(1, L + 1)
  with plotting.paper_style():
    picks = [j for j in np.linspace(0, len(sw2) - 1, min(4, len(sw2)))
             .round().astype(int)]
    for c_i, j in enumerate(picks):
      color = f"C{c_i}"
      for name, ls in (("c", "-"), ("q", ":")):
        g = np.mean(results[f"gap_{name}"][0, j], axis=-1)
        stop = int(results[f"fit_layers_{name}"][0, j])
        ax_g.semilogy(layers[:stop], g[:stop], ls, color=color, lw=1.1,
                      label=f"{name}, $\\sigma_w^2$ = {sw2[j]:g}")
        xi = results[f"theory_xi_{name}"][0, j]
        if stop and np.isfinite(xi) and g[0] > 0:
          ax_g.semilogy(layers[:stop], g[0] * np.exp(-layers[:stop] / xi
                                                     + 1 / xi),
                        "--", color="k", lw=0.4)
    ax_g.set_ylim(1e-5, 1.5)
    ax_g.set_xlabel("layer $l$")
    ax_g.set_ylabel("gap (seed mean)")
    ax_g.set_title(f"gaps over the fit range, $\\sigma_b^2$ = {sb2[0]:g}")
    ax_g.text(0.98, 0.98, "dashed: theory slopes", transform=ax_g.transAxes,
              ha="right", va="top", fontsize=5.5)
    ax_g.legend(fontsize=5, ncol=2, loc="lower right")

    for ax, name in ((ax_q, "q"), (ax_c, "c")):
      for i, b2 in enumerate(sb2):
        color = f"C{i}"
        ax.plot(results["curve_sigma_w2"][i], results[f"curve_xi_{name}"][i],
                "-", color=color, lw=0.9,
                label=f"theory, $\\sigma_b^2$ = {b2:g}")
        xi = results[f"xi_{name}"][i]
        lo, hi = results[f"xi_{name}_low"][i], results[f"xi_{name}_high"][i]
        ok = np.isfinite(xi)
        yerr = np.stack([xi - np.where(np.isfinite(lo), lo, xi),
                         np.where(np.isfinite(hi), hi, xi) - xi])
        ax.errorbar(sw2[ok], xi[ok], yerr=np.clip(yerr[:, ok], 0, None),
                    fmt="o", ms=3, capsize=2, color=color,
                    label=f"measured, $\\sigma_b^2$ = {b2:g}")
        if name == "c":
          ax.axvline(results["critical_sigma_w2"][i], color=color, lw=0.6,
                     ls=":")
      ax.set_xlabel("$\\sigma_w^2$")
      ax.set_ylabel(f"$\\xi_{name}$ (layers)")
    ax_q.set_title("$\\xi_q$: lengths relax in ~1 layer")
    ax_q.set_ylim(0, None)
    ax_q.legend(fontsize=5.5, loc="upper right")
    ax_c.set_yscale("log")
    ax_c.set_ylim(0.5, 300)
    ax_c.set_title("$\\xi_c$ diverges at $\\chi_1$ = 1 (dotted)")
    ax_c.legend(fontsize=5.5, loc="lower right")
    plotting.label_panels(axes)
    fig.suptitle(
        f"tanh MLPs, width {int(results['width'])}, depth {L}, "
        f"{results['gap_c'].shape[-1]} seeds: depth scales measured "
        "(90% bootstrap over seeds) against mean field", fontsize=7)
  return fig


@jax.jit
def _layer_states(p, x):
  """``(L, batch, n)`` activations after every layer of ``ex.mlp``."""
  def body(h, layer):
    h = ex.mlp.step(p, h, layer)
    return h, h
  return jax.lax.scan(body, x, ex.mlp.layers(p))[1]


def _orthonormal(key, k, n):
  """``(k, n)`` orthonormal rows (float64), a seed's input directions."""
  z = np.asarray(jax.random.normal(key, (n, k)), np.float64)
  return np.linalg.qr(z)[0].T


def _theory_curves(lo, hi, b2, n_ordered=150, n_chaotic=25):
  """``(sigma_w2, xi_q, xi_c)`` for the plot, ``n_ordered + n_chaotic``
  points: dense on the ordered side (cheap), coarser on the chaotic side
  (each point there solves for c*)."""
  crit = float(ex.theory.critical_sigma_w2("tanh", b2))
  if hi <= crit or lo >= crit:
    w = np.geomspace(lo, hi, n_ordered + n_chaotic)
  else:
    w = np.concatenate([np.geomspace(lo, crit * 0.9995, n_ordered),
                        np.geomspace(crit * 1.0005, hi, n_chaotic)])
  return (w, np.asarray(ex.theory.depth_scale_q("tanh", w, b2)),
          np.asarray(ex.theory.depth_scale_c("tanh", w, b2)))


@functools.lru_cache(maxsize=None)
def _fixed_points(w2, b2):
  """``(q*, c*, p*, c_h*)``: pre-activation length and correlation, and
  the activations' mean square and correlation at that fixed point."""
  q = float(ex.theory.q_star("tanh", w2, b2))
  c = float(ex.theory.c_star("tanh", w2, b2))
  return q, c, (q - b2) / w2, (c * q - b2) / (q - b2)


def _offsets(c, config):
  """Layer-1 correlations ``(c_minus, c_plus)`` of the two pair families:
  ``1 - delta_ordered`` for both where c* = 1; else ``c* -+ delta`` with
  delta at most half the room above c*."""
  if c >= 1:
    return (1 - float(config["delta_ordered"]),) * 2
  delta = min(float(config["delta"]), 0.5 * (1 - c))
  return c - delta, c + delta


def _inputs(dirs, w2, b2, n, config):
  """The batch: ``q_directions`` directions at lengths p*(1 +- eps), then
  ``c_pairs`` pairs at length p*, half at each of ``_offsets``."""
  q, c, p, _ = _fixed_points(w2, b2)
  n_pairs, eps = int(config["c_pairs"]), float(config["eps"])
  u, v = dirs[:n_pairs], dirs[n_pairs:2 * n_pairs]
  d = dirs[2 * n_pairs:]
  # Layer-1 pre-activation correlation (w2 rho p + b2) / q = target.
  rho = np.clip((np.repeat(_offsets(c, config), n_pairs // 2)[:, None] * q
                 - b2) / (q - b2), -1, 1)
  r = np.sqrt(n * p)
  x = np.concatenate([r * np.sqrt(1 + eps) * d, r * np.sqrt(1 - eps) * d,
                      r * u, r * (rho * u + np.sqrt(1 - rho**2) * v)])
  return x, len(d)


def _gaps(h, n_q, w2, b2):
  """Per-layer gaps ``(L,)``: the q directions' mean-square difference over
  p*; where c* = 1, the pairs' mean ``1 - c``, else the difference of the
  two families' mean correlations (``c_plus - c_minus``, no fixed point
  needed; their second-order terms cancel)."""
  _, c, p, _ = _fixed_points(w2, b2)
  ms = np.mean(h**2, axis=-1)                          # (L, batch)
  gap_q = np.mean(ms[:, :n_q] - ms[:, n_q:2 * n_q], axis=-1) / p
  pairs = h[:, 2 * n_q:]
  n_pairs = pairs.shape[1] // 2
  unit = pairs / np.linalg.norm(pairs, axis=-1, keepdims=True)
  a, b = unit[:, :n_pairs], unit[:, n_pairs:]
  one_minus_c = 0.5 * np.sum((a - b)**2, axis=-1)      # exact near c = 1
  if c >= 1:
    return gap_q, np.mean(one_minus_c, axis=-1)
  half = n_pairs // 2
  return gap_q, (np.mean(one_minus_c[:, :half], axis=-1)
                 - np.mean(one_minus_c[:, half:], axis=-1))


def _fit(gap, noise_factor):
  """``(xi, low, high, n_layers)`` from per-seed gaps ``(L, seeds)``."""
  seeds = gap.shape[-1]
  mean = np.mean(gap, axis=-1)
  se = np.std(gap, axis=-1, ddof=1) / np.sqrt(seeds)
  below = (mean <= noise_factor * se) | (mean <= 1e-5) | ~np.isfinite(mean)
  stop = int(np.argmax(below)) if below.any() else len(mean)
  if stop < 3:
    return np.nan, np.nan, np.nan, stop
  xi = float(_xi(mean[:stop]))
  idx = np.random.default_rng(0).integers(0, seeds, (RESAMPLES, seeds))
  boot = _xi(np.mean(gap[:stop, idx], axis=-1).T)     # (RESAMPLES,)
  low, high = np.nanpercentile(boot, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
  return xi, low, high, stop


def _xi(g):
  """``-1 / slope`` of ``log g`` over its last axis (layers), least
  squares; inf for a non-negative slope, NaN where a gap is not
  positive."""
  x = np.arange(g.shape[-1], dtype=np.float64)
  x = x - x.mean()
  with np.errstate(invalid="ignore", divide="ignore"):
    y = np.log(np.where(g > 0, g, np.nan))
    slope = np.sum(x * (y - y.mean(-1, keepdims=True)), -1) / np.sum(x * x)
    return np.where(slope < 0, -1.0 / slope,
                    np.where(np.isnan(slope), np.nan, np.inf))


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
