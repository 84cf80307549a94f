"""Jacobian spectra at criticality: free probability vs finite networks.

The input-output Jacobian ``J = D_L W_L ... D_1 W_1`` of a deep MLP at the
edge of chaos (``chi_1 = 1``) has squared singular values of mean 1 at every
depth, but their spread grows with depth at a rate set by the weights and
the nonlinearity. For wide nets (depth L << width N) free probability gives
the whole spectrum of ``J J^T`` (Pennington, Schoenholz & Ganguli 2017,
2018): its S-transform is ``S_J = (S_W S_D)^L``, with ``D^2`` the law of
``phi'(h)^2``, ``h ~ N(0, q*)``, and ``S_W(m) = 1 / (sigma_w^2 (1 + m))``
(Gaussian) or ``1 / sigma_w^2`` (orthogonal). Its variance is
``L (mu_2 / mu_1^2 - 1 - s_1)`` (``ex.theory.jacobian_spectrum_moments``;
``s_1 = -1`` Gaussian, 0 orthogonal): linear orthogonal nets are exact
isometries (variance 0), ReLU nets never (variance >= L), tanh nets with
orthogonal weights and a small bias come close: dynamical isometry.

The density is computed here (``free_density``): with ``m = M_D(u)``, the
moment transform ``M(z) = z G(z) - 1`` of the law of ``D^2``, the S-transform
relation ``z = (1 + M) / (M S(M))`` becomes one equation in the complex
variable u for every real ``x = sigma^2``,

  Gaussian:    x = sigma_w^(2L) u^L (1 + m) m^(L - 1),
  orthogonal:  x = sigma_w^(2L) u^L (m / (1 + m))^(L - 1),

solved by Newton's method on its L-th root, continued from above the
spectrum's edge downwards (u in the upper half plane); then ``G_J(x) =
(1 + m) / x`` and the density is ``-Im G_J / pi``. ``M_D`` is exact for the
two-point laws of linear and ReLU nets; for tanh, the law of ``phi'^2`` is
binned into equal-probability bins of constant density, whose Cauchy
transform is exact off and on the real axis. The density's mean and
variance match the closed forms (``tests/test_figures_0789.py``).

Each network is drawn once per seed and init at unit scale (one vmapped
``ex.mlp.init``), then given each activation and the critical point
``weight_scale = sqrt(critical_sigma_w2)`` as data (the scales are leaves:
no redraw, no recompile per scale). Its input is drawn so that the first
pre-activations have variance ``q*`` (input variance ``(q* - sigma_b^2) /
sigma_w^2``): the spectrum is the fixed point's, with no transient. The
Jacobian of ``ex.mlp.apply`` over consecutive segments of layers is
materialised with ``jax.jacfwd`` in float64 and multiplied up to each
depth; squared singular values by LAPACK (``numpy.linalg.svd``). Measured
variance over each net's N values, per seed, divided by theory: the seed
mean with its 90% percentile bootstrap interval. The same ratio for
``Var / mean^2`` (each net's spectrum scaled to mean 1) separates the
spectrum's shape from the fluctuation of its overall scale, which grows
like exp(L / N) (Hanin 2018).

Run: ``python experiments/fig08_jacobian_spectra.py [--quick]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

import exploding as ex
from exploding import plotting

QUICK = {"width": 40, "depths": [1, 4], "seeds": 8, "tanh_sigma_b2": 1e-3,
         "key": 0, "density_step": 0.05, "law_bins": 200}
FULL = {"width": 256, "depths": [3, 6, 12, 24], "seeds": 8,
        "tanh_sigma_b2": 1e-3, "key": 0, "density_step": 0.02,
        "law_bins": 400}

ACTIVATIONS = ("linear", "relu", "tanh")
INITS = ("gaussian", "orthogonal")
LEVEL = 0.9
CACHE_VERSION = 3

# NaN where Newton's method did not converge (far below the spectrum,
# where the density is < 1e-3 per decade) and for linear orthogonal nets,
# whose spectrum is a point mass at 1 (drawn as a line).
ALLOW_NONFINITE = {"theory_density"}


def compute(config: dict) -> dict[str, np.ndarray]:
  """Squared singular values of the Jacobian at each depth, and theory.

  Args:
    config: ``width`` (int), ``depths`` (increasing ints), ``seeds`` (int,
      networks per setting), ``tanh_sigma_b2`` (bias variance of the tanh
      nets; linear and ReLU nets have no bias), ``key`` (int),
      ``density_step`` (spacing of the theory density's grid in log10
      sigma^2), ``law_bins`` (bins of the tanh ``phi'^2`` law).

  Returns:
    ``log10_sv2``: (n_act, n_init, n_depths, seeds, width) float64,
    ``log10 sigma_i^2`` of ``dh_L / dh_0``.
    ``variance``, ``mean``: (n_act, n_init, n_depths, seeds) per net, over
    its singular values.
    ``theory_variance``, ``theory_mean``: (n_act, n_init, n_depths).
    ``ratio``, ``ratio_low``, ``ratio_high``: (n_act, n_init, n_depths) the
    seed mean of ``variance / theory_variance`` and its 90% bootstrap
    interval (NaN-free: 0 where theory is 0). ``shape_ratio``,
    ``shape_ratio_low``, ``shape_ratio_high``: the same for ``variance /
    mean^2``.
    ``density_log10_x``: (n_x,); ``theory_density``: (n_act, n_init,
    n_depths, n_x) free-probability density per unit ``log10 sigma^2``.
    ``sigma_w2``, ``sigma_b2``, ``q_star``: (n_act,) the critical point.
    ``depths``: (n_depths,) int; ``width``, ``seeds``: () int.
  """
  width = int(config["width"])
  depths = np.asarray(config["depths"], dtype=np.int64)
  seeds = int(config["seeds"])
  if width < 1 or seeds < 2 or depths.min() < 1 or np.any(np.diff(depths)
                                                           <= 0):
    raise ValueError(f"need width >= 1, seeds >= 2 and increasing depths "
                     f">= 1; got {width}, {seeds}, {depths.tolist()}")
  shape = (len(ACTIVATIONS), len(INITS), len(depths))
  theory_var, theory_mean = np.zeros(shape), np.zeros(shape)
  sigma_w2, sigma_b2, q_stars = [], [], []
  for a, name in enumerate(ACTIVATIONS):
    sb2 = float(config["tanh_sigma_b2"]) if name == "tanh" else 0.0
    sw2 = float(ex.theory.critical_sigma_w2(name, sb2))
    # Linear and ReLU nets without bias are scale-free: any q.
    q = float(ex.theory.q_star(name, sw2, sb2)) if name == "tanh" else 1.0
    sigma_w2.append(sw2)
    sigma_b2.append(sb2)
    q_stars.append(q)
    for i, init in enumerate(INITS):
      for d, depth in enumerate(depths):
        theory_mean[a, i, d], theory_var[a, i, d] = (
            ex.theory.jacobian_spectrum_moments(
                name, int(depth), init=init, sigma_w2=sw2, sigma_b2=sb2))

  sv2 = _measure(width, depths, seeds, int(config["key"]), sigma_w2,
                 sigma_b2, q_stars).reshape(shape + (seeds, width))
  mean, variance = sv2.mean(-1), sv2.var(-1)
  safe = np.where(theory_var > 0, theory_var, 1.0)[..., None]
  ratio = _bootstrap_mean(np.where(theory_var[..., None] > 0,
                                   variance / safe, 0.0))
  shape_ratio = _bootstrap_mean(np.where(theory_var[..., None] > 0,
                                         variance / mean**2 / safe, 0.0))

  log10_x = np.arange(-12.0, 3.0 + 1e-9, float(config["density_step"]))
  density = np.full(shape + (len(log10_x),), np.nan)
  for a, name in enumerate(ACTIVATIONS):
    for i, init in enumerate(INITS):
      if name == "linear" and init == "orthogonal":
        continue                  # a point mass at 1
      for d, depth in enumerate(depths):
        density[a, i, d] = free_density(
            name, init, int(depth), sigma_w2[a], q_stars[a], log10_x,
            bins=int(config["law_bins"]))
  return {
      "log10_sv2": np.log10(np.maximum(sv2, 1e-300)),
      "mean": mean,
      "variance": variance,
      "theory_mean": theory_mean,
      "theory_variance": theory_var,
      "ratio": ratio[0], "ratio_low": ratio[1], "ratio_high": ratio[2],
      "shape_ratio": shape_ratio[0], "shape_ratio_low": shape_ratio[1],
      "shape_ratio_high": shape_ratio[2],
      "density_log10_x": log10_x,
      "theory_density": density,
      "sigma_w2": np.asarray(sigma_w2),
      "sigma_b2": np.asarray(sigma_b2),
      "q_star": np.asarray(q_stars),
      "depths": depths,
      "width": np.asarray(width),
      "seeds": np.asarray(seeds),
  }


def _measure(width, depths, seeds, key, sigma_w2, sigma_b2, q_stars):
  """``(n_act * n_init * n_depths * seeds, width)`` squared singular
  values, largest first, in (activation, init, depth, seed) order."""
  jacobians = []
  with jax.enable_x64(True):
    # unsafe_rbg keys: the same statistics as threefry, drawn in a fraction
    # of the time.
    k_net, k_in = jax.random.split(jax.random.key(key, impl="unsafe_rbg"))
    keys = jax.random.split(k_net, seeds)
    unit_inputs = jax.random.normal(k_in, (seeds, 1, width), jnp.float64)
    nets = [_init(keys, width, int(depths[-1]), init) for init in INITS]
    for a, name in enumerate(ACTIVATIONS):
      # First pre-activations at variance q*: E[h0^2] = (q* - sb2) / sw2.
      scale = (np.sqrt((q_stars[a] - sigma_b2[a]) / sigma_w2[a])
               if name == "tanh" else 1.0)
      for unit in nets:
        h = scale * unit_inputs
        jac = jnp.broadcast_to(jnp.eye(width), (seeds, width, width))
        # Equal segments: one compiled program per activation.
        size = int(np.gcd.reduce(depths))
        for start in range(0, int(depths[-1]), size):
          # The scales are leaves: set them on the unit draws.
          segment = unit.replace(
              activation=name,
              weight_scale=jnp.full(seeds, np.sqrt(sigma_w2[a])),
              bias_scale=jnp.full(seeds, np.sqrt(sigma_b2[a])),
              W0=unit.W0[:, start:start + size],
              b0=unit.b0[:, start:start + size])
          jac, h = _segment(segment, h, jac)
          if start + size in depths:
            jacobians.append(np.asarray(jac))
  # LAPACK's gesdd through numpy: several times faster than XLA's SVD on CPU.
  return np.linalg.svd(np.concatenate(jacobians), compute_uv=False)**2


def _init(keys, width, depth, init):
  """One unit-scale float64 MLP per key (a leading seed axis on every
  leaf)."""
  draw = functools.partial(ex.mlp.init, width=width, depth=depth, init=init,
                           dtype=jnp.float64)
  return jax.jit(jax.vmap(draw))(keys)


@jax.jit
@jax.vmap
def _segment(p, h, jac):
  """Carries a net's input-output Jacobian ``jac`` (width, width) and its
  state ``h`` (1, width) through the layers of ``p``."""
  step = jax.jacfwd(lambda x: ex.mlp.apply(p, x)[0])(h)[:, 0, :]
  return step @ jac, ex.mlp.apply(p, h)


def free_density(activation: str, init: str, depth: int, sigma_w2: float,
                 q: float, log10_x: np.ndarray, *, bins: int = 400,
                 max_iter: int = 60) -> np.ndarray:
  """Free-probability density of the squared singular values of J.

  ``J = D_L W_L ... D_1 W_1`` at width -> infinity, ``W`` Gaussian or
  Haar-orthogonal with variance ``sigma_w2 / N``, ``D = diag(phi'(h))``,
  ``h ~ N(0, q)`` (Pennington, Schoenholz & Ganguli 2018, eqs. 7-11): the
  equations in the module docstring, solved at each ``x = 10^log10_x``
  from above the spectrum downwards.

  Args:
    activation: ``"linear"``, ``"relu"`` or ``"tanh"``.
    init: ``"gaussian"`` or ``"orthogonal"`` (not linear orthogonal: a
      point mass at 1).
    depth: L >= 1.
    sigma_w2: weight variance > 0.
    q: pre-activation variance q* > 0 (tanh only).
    log10_x: (n,) float, increasing.
    bins: equal-probability bins of the tanh ``phi'^2`` law.
    max_iter: Newton iterations per point; NaN where they do not converge.

  Returns:
    (n,) float64: the density per unit ``log10 sigma^2``, ``x rho(x) ln
    10`` (for ReLU the point mass 1/2 at 0 is not in it).

  References:
    Pennington, Schoenholz, Ganguli. Resurrecting the sigmoid in deep
    learning through dynamical isometry. NeurIPS 2017. The emergence of
    spectral universality in deep networks. AISTATS 2018.
  """
  if activation == "linear" and init == "orthogonal":
    raise ValueError("linear orthogonal nets are isometries: the spectrum "
                     "is a point mass at 1, not a density")
  if init not in INITS:
    raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
  if int(depth) < 1 or not sigma_w2 > 0:
    raise ValueError(f"need depth >= 1 and sigma_w2 > 0, got {depth}, "
                     f"{sigma_w2}")
  log10_x = np.asarray(log10_x, np.float64)
  if log10_x.ndim != 1 or np.any(np.diff(log10_x) <= 0):
    raise ValueError("log10_x must be a 1-d increasing array")
  moment = _moment_transform(activation, q, bins)
  L = int(depth)
  a = (L - 1) / L

  def newton(u, log_x):
    """The root near ``u`` at ``x = exp(log_x)``, ``m`` there, converged."""
    # Off the real axis: from a real start Newton's steps stay real and
    # never reach the complex root inside the spectrum.
    u = complex(u.real, max(u.imag, 1e-3 * abs(u)))
    for _ in range(max_iter):
      m, dm = moment(u)
      if init == "gaussian":
        f = np.log(sigma_w2 * u) + a * np.log(m) + np.log1p(m) / L
        df = 1.0 / u + dm * (a / m + 1.0 / (L * (1.0 + m)))
      else:
        f = np.log(sigma_w2 * u) + a * (np.log(m) - np.log1p(m))
        df = 1.0 / u + dm * a * (1.0 / m - 1.0 / (1.0 + m))
      f -= log_x / L
      if abs(f) < 1e-10:
        return u, m, True
      step = f / df
      if abs(step) > 0.3 * abs(u):       # damped: stay on this branch
        step *= 0.3 * abs(u) / abs(step)
      u = u - step
      if u.imag <= 0:                    # the physical root has Im u >= 0
        u = complex(u.real, 1e-14 * abs(u))
    return u, m, False

  def walk(u, log_x0, log_x1, halvings=0):
    """Continues the root from ``log_x0`` to ``log_x1``, halving the step
    where Newton's method does not converge."""
    new, m, ok = newton(u, log_x1)
    if ok or halvings == 5:
      return new, m, ok
    mid = 0.5 * (log_x0 + log_x1)
    u, _, ok = walk(u, log_x0, mid, halvings + 1)
    if not ok:
      return u, m, False
    return walk(u, mid, log_x1, halvings + 1)

  log_x = np.log(10.0) * log10_x[::-1]
  # Start far above the top edge, where m ~ E[d] / u is small and real.
  here = log_x[0] + np.log(10.0 * L)
  u = complex(np.exp(here) / sigma_w2)
  u, _, _ = newton(u, here)
  out = np.full(len(log_x), np.nan)
  failures = 0
  for k, target in enumerate(log_x):
    new, m, ok = walk(u, here, target)
    failures = 0 if ok else failures + 1
    if failures == 4:
      break              # lost the root (where the density is ~0): NaN
    if ok:
      u, here = new, target
      # G_J = (1 + m) / x, density -Im G / pi, per unit log10 x.
      out[k] = max(-m.imag, 0.0) / np.pi * np.log(10.0)
  return out[::-1]


def _moment_transform(activation, q, bins):
  """``u -> (M(u), M'(u))``, ``M(u) = E[d / (u - d)]`` for the law of ``d =
  phi'(h)^2``, ``h ~ N(0, q)``."""
  if activation in ("linear", "relu"):
    d, p = ((np.array([1.0]), np.array([1.0])) if activation == "linear"
            else (np.array([0.0, 1.0]), np.array([0.5, 0.5])))

    def atomic(u):
      r = p * d / (u - d)
      return r.sum(), -(r / (u - d)).sum()
    return atomic
  if activation != "tanh":
    raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got "
                     f"{activation!r}")
  if not q > 0:
    raise ValueError(f"q must be > 0 for tanh, got {q}")
  # sech^4(sqrt(q) |z|) decreases in |z|: equal-probability bins in |z|,
  # each of constant density on [lo, hi].
  z = special.ndtri(0.5 + 0.5 * np.arange(bins) / bins)
  edges = np.append(np.cosh(np.sqrt(q) * z)**-4.0, 0.0)
  lo, hi = edges[1:], edges[:-1]
  w, p = hi - lo, 1.0 / bins

  def binned(u):
    # The bin's mean of d / (u - d) is (hi + u (S - 1)) / (u - hi), with
    # S = log(1 + t) / t, t = w / (u - hi): exact on and off the real axis,
    # and accurate far from the bin (a series for S - 1 where t is small).
    t = w / (u - hi)
    small = np.abs(t) < 1e-2
    ts = np.where(small, t, 0.0)
    series = ts * (-1 / 2 + ts * (1 / 3 + ts * (-1 / 4 + ts * (
        1 / 5 + ts * (-1 / 6 + ts / 7)))))
    tl = np.where(small, 1.0, t)
    s1 = np.where(small, series, np.log(1.0 + tl) / tl - 1.0)
    m = p * np.sum((hi + u * s1) / (u - hi))
    return m, p * np.sum((1.0 + s1) / (u - hi) - u / ((u - lo) * (u - hi)))
  return binned


def _bootstrap_mean(values):
  """Seed mean over the last axis and its percentile bootstrap interval
  (``ex.seed_mean``)."""
  return tuple(ex.seed_mean(values, interval=LEVEL)[:3])


def plot(results: dict[str, np.ndarray]):
  """Top two rows: densities of log10 sigma^2 with free-probability theory;
  bottom: measured / theory variance vs depth."""
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D

  depths = results["depths"]
  width = int(results["width"])
  n_seeds = int(results["seeds"])
  logs = results["log10_sv2"]
  xs = results["density_log10_x"]
  colors = [plotting.PALETTE[i] for i in (5, 0, 4, 1, 2, 3)][:len(depths)]
  deep = len(depths) - 1
  with plotting.paper_style():
    fig = Figure(figsize=(plotting.FULL_WIDTH, 7.2), layout="constrained")
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 1.0])
    hist_axes = []
    finite = logs[np.isfinite(logs) & (logs > -290)]
    lo = float(np.clip(np.floor(np.percentile(finite, 0.5)), -12, -3))
    hi = float(np.ceil(finite.max()) + 0.5)
    bins = np.linspace(lo, hi, int(4 * (hi - lo)) + 1)
    for i, init in enumerate(INITS):
      for a, name in enumerate(ACTIVATIONS):
        ax = fig.add_subplot(grid[i, a])
        hist_axes.append(ax)
        for d in range(len(depths)):
          values = np.clip(logs[a, i, d].ravel(), lo, hi - 1e-9)
          ax.hist(values, bins=bins, density=True, histtype="step",
                  color=colors[d], lw=0.9)
          ax.plot(xs, results["theory_density"][a, i, d], color="k",
                  lw=0.6, ls=(0, (3, 2)))
        if name == "linear" and init == "orthogonal":
          ax.axvline(0.0, color="k", lw=0.6, ls=(0, (3, 2)))
        ax.set_yscale("log")
        ax.set_ylim(3e-3, 3e2)
        ax.set_xlim(lo, hi)
        ax.text(0.03, 0.97, _ratio_text(results, a, i, deep),
                transform=ax.transAxes, va="top", ha="left", fontsize=5.5,
                color=colors[deep])
        sb2 = results["sigma_b2"][a]
        bias = f", $\\sigma_b^2$ = {sb2:g}" if sb2 > 0 else ""
        ax.set_title(f"{name}, {init}: $\\sigma_w^2$ = "
                     f"{results['sigma_w2'][a]:.3g}{bias}", fontsize=6.5)
        if i == 1:
          ax.set_xlabel("$\\log_{10} \\sigma^2$ (squared singular value)")
        if a == 0:
          ax.set_ylabel("density per unit $\\log_{10} \\sigma^2$")
    handles = [Line2D([], [], color=c, lw=0.9, label=f"L = {d}")
               for c, d in zip(colors, depths)]
    handles.append(Line2D([], [], color="k", lw=0.6, ls=(0, (3, 2)),
                          label="free prob."))
    hist_axes[3].legend(handles=handles, loc="center left", fontsize=5.5,
                        handlelength=1.8)

    ratio_axes = []
    for a, name in enumerate(ACTIVATIONS):
      ax = fig.add_subplot(grid[2, a])
      ratio_axes.append(ax)
      for i, init in enumerate(INITS):
        if results["theory_variance"][a, i].max() == 0:
          ax.text(0.03, 0.05, f"{init}: theory 0 (isometry), measured "
                  f"Var $\\leq$ {results['variance'][a, i].max():.0e}\n"
                  "(W is drawn orthogonal in float32)",
                  transform=ax.transAxes, fontsize=5.5,
                  color=plotting.PALETTE[i])
          continue
        for key, filled, shift in (("ratio", True, 0.0),
                                   ("shape_ratio", False, 0.05)):
          v = results[key][a, i]
          err = np.stack([v - results[key + "_low"][a, i],
                          results[key + "_high"][a, i] - v])
          ax.errorbar(depths * 10**(0.035 * (2 * i - 1) + shift), v,
                      yerr=err, ls="none", marker="o" if i == 0 else "s",
                      ms=3.2, color=plotting.PALETTE[i], capsize=1.5,
                      elinewidth=0.7, markerfacecolor=plotting.PALETTE[i]
                      if filled else "white")
      ax.axhline(1.0, color="k", lw=0.6, ls=(0, (3, 2)))
      ax.set_xscale("log", base=2)
      ax.set_xticks(depths, [str(d) for d in depths])
      ax.minorticks_off()
      ax.set_ylim(0.0, 2.2)
      ax.set_xlim(depths[0] / 1.5, depths[-1] * 1.5)
      ax.set_xlabel(f"depth L (L / N = {depths[0] / width:.2g} .. "
                    f"{depths[-1] / width:.2g})")
      ax.set_title(f"{name}: Var[$\\sigma^2$], measured / theory",
                   fontsize=6.5)
      if a == 0:
        ax.set_ylabel(f"ratio: mean of {n_seeds} seeds, 90% CI")
    ratio_axes[1].legend(handles=[
        Line2D([], [], color=plotting.PALETTE[0], marker="o", ls="none",
               label="Gaussian"),
        Line2D([], [], color=plotting.PALETTE[1], marker="s", ls="none",
               label="orthogonal"),
        Line2D([], [], color="0.3", marker="o", ls="none", label="Var"),
        Line2D([], [], color="0.3", marker="o", ls="none",
               markerfacecolor="white", label="Var / mean$^2$"),
    ], loc="upper left", fontsize=5.5, ncol=2)
    fig.suptitle(
        f"Jacobian spectra at criticality, width N = {width}, {n_seeds} "
        f"seeds per histogram; dashed: free probability (N $\\to \\infty$)"
        f".\nValues below $10^{{{lo:g}}}$ (for ReLU the zero half of the "
        f"spectrum) are counted in the first bin.", fontsize=7, x=0.01,
        ha="left")
    plotting.label_panels(hist_axes + ratio_axes)
  return fig


def _ratio_text(results, a, i, d):
  depth = int(results["depths"][d])
  if results["theory_variance"][a, i, d] == 0:
    return (f"L = {depth}: Var[$\\sigma^2$] theory 0,\n"
            f"measured {results['variance'][a, i, d].max():.0e}")
  est = ex.Estimate(*(float(results[k][a, i, d])
                      for k in ("ratio", "ratio_low", "ratio_high")),
                    int(results["seeds"]), LEVEL)
  return (f"L = {depth}: Var[$\\sigma^2$] theory "
          f"{results['theory_variance'][a, i, d]:.3g}\n"
          f"measured / theory\n{est}")


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
