"""RNN gradient maps: where linear, tanh, ReLU, sigmoid RNNs vanish or explode.

For ``h_t = phi(g W0 h_(t-1))`` (no bias, no input, ``W0`` entries
``N(0, 1/n)``) the growth ``log10 ||J_T ... J_1 v||`` of a random unit
tangent, measured forward (JVP) in log space, is mapped over weight scale g
and sequence length T. On each map: the measured critical scale (where the
growth rate per step crosses 0), the mean-field edge of chaos
(``chi_1 = 1``: ``g = sqrt(critical_sigma_w2(phi, 0))``, 1 for linear and
tanh, sqrt(2) for ReLU, 9.9 for sigmoid) and Pascanu et al.'s sufficient
condition for vanishing, ``sigma_max(g W0) < 1 / gamma``, placed on the g
axis with the measured ``sigma_max(W0)`` (about 2 for a square Gaussian
matrix), so at ``g = 1 / (gamma sigma_max(W0))``.

All four activations run in one compiled program: the positively
homogeneous ones (linear, ReLU), whose state is renormalised so it never
overflows, in one vmapped group, tanh and sigmoid in another.

Run: ``python experiments/fig04_rnn_maps.py [--quick]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

ACTIVATIONS = ("linear", "tanh", "relu", "sigmoid")
# (lo, hi, log-spaced?) weight scales per activation, around each transition.
SCALE_RANGES = {"linear": (0.3, 1.7, False), "tanh": (0.3, 2.3, False),
                "relu": (0.3, 2.6, False), "sigmoid": (1.0, 20.0, True)}

QUICK = {"hidden": 32, "length": 64, "n_scales": 12, "seeds": 2, "key": 0,
         "fast_compile": True}
FULL = {"hidden": 128, "length": 256, "n_scales": 40, "seeds": 4, "key": 0,
        "fast_compile": False}

# A tanh state at g < 1 decays to exactly 0 in float32: log ||h_t|| = -inf
# there (the growth, measured on the tangent, stays finite).
ALLOW_NONFINITE = {"log_state_norm"}

# Homogeneous transitions are renormalised (static flag of the engine), so
# they form their own vmapped group; ``lax.switch`` picks the activation.
_GROUPS = (("linear", "relu"), ("tanh", "sigmoid"))


def compute(config: dict) -> dict[str, np.ndarray]:
  """Growth maps of the four RNNs, critical scales and theory lines.

  Args:
    config: ``hidden`` (n), ``length`` (T), ``n_scales``, ``seeds``, ``key``
      (int), ``fast_compile`` (bool: XLA backend optimisation off, which
      compiles ~2x faster and runs slower; for small configs).

  Returns:
    ``log_growth``, ``log_state_norm``: (4, n_scales, T, seeds) natural log,
    activations in ``ACTIVATIONS`` order. ``overflow_step``: (4, n_scales,
    seeds). ``weight_scales``: (4, n_scales). ``steps``: (T,).
    ``hidden``: () n. ``rate``: (4, n_scales) nats/step.
    ``critical_scale``: (4,) measured.
    ``mean_field``: (4,) ``sqrt(critical_sigma_w2(phi, 0))``.
    ``gamma``: (4,) ``sup |phi'|``. ``sigma_max_w0``: (seeds,) largest
    singular value of each seed's ``W0``. ``pascanu``: (4,)
    ``pascanu_vanishing_bound / mean sigma_max(W0)``, a weight scale.
  """
  n, T, seeds = int(config["hidden"]), int(config["length"]), int(
      config["seeds"])
  scales = np.stack([_scale_grid(a, int(config["n_scales"]))
                     for a in ACTIVATIONS])
  run = _program(n, T, bool(config["fast_compile"]))
  keys = jax.random.split(jax.random.key(int(config["key"])), seeds)
  order = [ACTIVATIONS.index(a) for group in _GROUPS for a in group]
  grouped = scales[order].reshape(len(_GROUPS), 2, -1)
  lg, ls, ov, w0 = jax.device_get(run(jnp.asarray(grouped, jnp.float32),
                                      keys))
  smax = np.linalg.norm(np.asarray(w0, np.float64), ord=2, axis=(1, 2))
  back = np.argsort(order)

  def ungroup(a):  # (groups, 2, seeds, scales, ...) -> (4, scales, ..., seeds)
    a = np.asarray(a).reshape((4,) + a.shape[2:])[back]
    return np.moveaxis(a, 1, -1)

  log_growth, log_state = ungroup(lg), ungroup(ls)
  overflow = ungroup(ov)
  steps = np.arange(1, T + 1)
  rate, critical = [], []
  for i in range(len(ACTIVATIONS)):
    m = _as_map(log_growth[i], log_state[i], overflow[i], scales[i], steps)
    rate.append(m.rate())
    critical.append(m.critical_scale())
  gamma = np.array([ex.activation(a).gamma for a in ACTIVATIONS])
  bound = np.array([ex.theory.pascanu_vanishing_bound(a) for a in ACTIVATIONS])
  return {
      "log_growth": log_growth,
      "log_state_norm": log_state,
      "overflow_step": overflow,
      "weight_scales": scales,
      "steps": steps,
      "hidden": np.array(n),
      "rate": np.array(rate),
      "critical_scale": np.array(critical),
      "mean_field": np.array([np.sqrt(ex.theory.critical_sigma_w2(a, 0.0))
                              for a in ACTIVATIONS]),
      "gamma": gamma,
      "sigma_max_w0": smax,
      "pascanu": bound / smax.mean(),
  }


def plot(results: dict[str, np.ndarray]):
  """A 2 x 2 grid of maps, each with measured and predicted critical scales."""
  fig, axes = plotting.new_figure(2, 2, width="full", height=5.4)
  smax = float(np.mean(results["sigma_max_w0"]))
  with plotting.paper_style():
    for i, (ax, name) in enumerate(zip(axes.flat, ACTIVATIONS)):
      m = _as_map(results["log_growth"][i], results["log_state_norm"][i],
                  results["overflow_step"][i], results["weight_scales"][i],
                  results["steps"])
      theory = {"mean field $\\chi_1 = 1$": results["mean_field"][i],
                "Pascanu $g\\,\\sigma_{max}(W_0) = 1/\\gamma$":
                    results["pascanu"][i]}
      plotting.draw_growth_map(ax, m, theory=theory, legend=False)
      if SCALE_RANGES[name][2]:
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 20], ["1", "2", "5", "10", "20"])
        ax.set_xticks([], minor=True)
      gamma = results["gamma"][i]
      ax.set_title(f"{name} RNN ($\\gamma$ = sup|$\\phi'$| = {gamma:g})")
      ax.set_xlabel("weight scale $g$ ($\\sigma_w$)")
      ax.legend(loc="upper left", fontsize=6, frameon=True, framealpha=0.85,
                handlelength=2.2)
    plotting.label_panels(axes)
    n = results["log_growth"].shape[-1]
    fig.suptitle(
        f"{int(results['hidden'])}-unit RNNs: log$_{{10}}$ of the JVP growth "
        f"$\\|J_T\\cdots J_1 v\\|$, mean of {n} seeds; black contour: "
        f"growth = 1; Pascanu bound placed with the "
        f"measured $\\sigma_{{max}}(W_0)$ = {smax:.2f}", fontsize=7)
  return fig


def _scale_grid(name: str, n_scales: int) -> np.ndarray:
  lo, hi, log = SCALE_RANGES[name]
  return np.geomspace(lo, hi, n_scales) if log else np.linspace(lo, hi,
                                                                n_scales)


def _as_map(log_growth, log_state, overflow, scales, steps) -> ex.GradientMap:
  return ex.GradientMap(log_growth=log_growth, log_state_norm=log_state,
                        overflow_step=overflow, weight_scales=scales,
                        steps=steps,
                        config={"model": "rnn", "method": "jvp"})


@functools.lru_cache(maxsize=4)
def _program(hidden: int, length: int, fast_compile: bool):
  """One jitted program: (groups, 2, scales) x seed keys -> growth arrays."""

  def point(group, index, g, key):
    k_init, k_state, k_probe = jax.random.split(key, 3)
    p = ex.rnn.init(k_init, hidden).replace(weight_scale=g)
    h0 = jax.random.normal(k_state, (hidden,))
    branches = [functools.partial(ex.rnn.step, p.replace(activation=a))
                for a in _GROUPS[group]]

    def f(h, x):
      return jax.lax.switch(index, branches, h)

    out = ex.jvp_growth(f, h0, length=length, key=k_probe,
                        homogeneous=group == 0)
    return out.log_growth, out.log_state_norm, out.overflow_step

  def per_seed(gs, key):
    outs = []
    for group in range(len(_GROUPS)):
      over_scales = jax.vmap(functools.partial(point, group),
                             in_axes=(None, 0, None))
      over_acts = jax.vmap(over_scales, in_axes=(0, 0, None))
      outs.append(over_acts(jnp.arange(2), gs[group], key))
    w0 = ex.rnn.init(jax.random.split(key, 3)[0], hidden).W0
    return tuple(jnp.stack(o) for o in zip(*outs)) + (w0,)

  def run(gs, keys):
    lg, ls, ov, w0 = jax.vmap(per_seed, in_axes=(None, 0))(gs, keys)
    # (seeds, groups, 2, scales, ...) -> (groups, 2, seeds, scales, ...)
    move = lambda a: jnp.moveaxis(a, 0, 2)
    return move(lg), move(ls), move(ov), w0

  options = {"xla_backend_optimization_level": 0} if fast_compile else None
  return jax.jit(run, compiler_options=options)


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
