"""Three claims from the seed texts, measured: stacking, initial state, w = 0.7.

(a) Stacked RNNs (fastai, ch. 12). D tanh RNN layers, layer d reading
layer d-1's new state: ``h^d_t = tanh(g W_d h^d_(t-1) + U_d h^(d-1)_t)``
(layer 1 has no input; ``W_d``, ``U_d`` entries ``N(0, 1/n)``). Its
Jacobian over one time step is block lower-triangular, so its Lyapunov
exponents are the layers' own; each upper layer is driven by the one
below, which suppresses its chaos (fig14), so the largest exponent is the
undriven bottom layer's, ``rnn_lyapunov_max("tanh", g)``, and the edge of
chaos stays at g = 1 at every depth. Stacking lengthens the paths (and
multiplies the gradient by the vertical factors), not the rate per step.

(b) "A large initial state keeps units off the slope." Only for one step:
``tanh`` maps any state into [-1, 1], so ``h_0 = s z`` (z a unit draw)
changes the first Jacobian ``diag(tanh'(g W0 h_0)) g W0`` and nothing
after it. Measured: the growth over time for s = 0.01 .. 100 in a tanh
RNN; the rate per step after the first is the same for every s, the first
step's log growth drops as s grows.

(c) "w = 0.7 explodes after enough inputs." False for a contraction: the
scalar RNN ``h_t = phi(0.7 h_(t-1) + x_t)`` has ``dh_T / dh_0 = prod 0.7
phi'(a_t)``, and ``|phi'| <= 1`` for tanh and linear, so ``log |dh_T /
dh_0| <= T log 0.7`` for every input sequence, however long or large
(linear: equal). Measured over T = 1 .. ``long_length`` for Gaussian inputs
of several scales.

Every measurement is an ``ex.sweep``: (a) of an ``ex.Model`` stacking the
built-in ``ex.rnn.step`` (one per depth), (b) of the depth-1 stack with
``state0 = s z`` (one compilation for all s), (c) of a one-unit Model on
``ex.rnn.step`` with an ``input_scale`` knob (one sweep over the input
scales per activation, ``inputs="gaussian"``: each seed its own inputs).
Spreads: 90% percentile
bootstrap over seeds.

References:
  Howard, Gugger. Deep Learning for Coders with fastai and PyTorch, ch. 12
  (stacked RNNs). O'Reilly 2020.
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013 (the contraction bound).

Run: ``python experiments/fig17_seed_claims.py [--quick]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex
from exploding import plotting

QUICK = {"hidden": 64, "length": 128, "seeds": 8, "depths": [1, 2],
         "n_scales": 13, "scale_range": [0.6, 1.8],
         "state_scales": [0.01, 1.0, 100.0], "state_gain": 1.5,
         "contraction": 0.7, "activations": ["tanh"],
         "input_stds": [0.0, 1.5], "long_length": 256, "key": 0}
FULL = {"hidden": 128, "length": 256, "seeds": 8, "depths": [1, 2, 4],
        "n_scales": 25, "scale_range": [0.6, 1.8],
        "state_scales": [0.01, 0.1, 1.0, 10.0, 100.0], "state_gain": 1.5,
        "contraction": 0.7, "activations": ["tanh", "linear"],
        "input_stds": [0.0, 0.5, 1.5], "long_length": 4096, "key": 0}
CACHE_VERSION = 1

# A tanh state at g < 1 decays to exactly 0 in float32 (log norm -inf); a
# scalar tanh state without input does too.
ALLOW_NONFINITE = {"stack_log_state_norm", "contraction_log_state_norm"}


@functools.lru_cache(maxsize=None)
def stacked_rnn(hidden: int, depth: int) -> ex.Model:
  """A depth-``depth`` stack of the built-in tanh RNN as a ``Model``.

  Params: ``W0``, ``U`` ``(depth, hidden, hidden)`` from ``ex.rnn.init``
  per layer (layer 0's ``U`` unused), knobs ``weight_scale`` (every
  layer's g) and ``bias_scale`` (0). State ``(depth, hidden)``.
  """
  def init(key):
    layers = [ex.rnn.init(k, hidden, input_size=hidden)
              for k in jax.random.split(key, depth)]
    return {"W0": jnp.stack([p.W0 for p in layers]),
            "U": jnp.stack([p.U for p in layers]),
            "b0": jnp.stack([p.b0 for p in layers]),
            "weight_scale": jnp.float32(1.0), "bias_scale": jnp.float32(0.0)}

  def step(p, h, x):
    del x
    below, out = None, []
    for d in range(depth):
      layer = ex.rnn.RNNParams(p["W0"][d], p["U"][d], p["b0"][d],
                               p["weight_scale"], p["bias_scale"], "tanh")
      below = ex.rnn.step(layer, h[d], below)
      out.append(below)
    return jnp.stack(out)

  def state0(key):
    return jax.random.normal(key, (depth, hidden), jnp.float32)

  return ex.Model(init=init, step=step, state0=state0,
                  name=f"stacked_rnn_{depth}",
                  settings={"hidden": hidden, "depth": depth})


@functools.lru_cache(maxsize=None)
def scalar_rnn(activation: str) -> ex.Model:
  """``h_t = phi(w h_(t-1) + sigma_x xi_t)``: the built-in one-unit RNN
  step with identity ``W0`` (so ``weight_scale`` is w) and input weight
  ``input_scale`` (a knob), for ``inputs="gaussian"`` (xi_t ~ N(0, 1))."""
  def init(key):
    p = ex.rnn.init(key, 1, activation=activation, init="identity",
                    input_size=1)
    return {"rnn": p, "weight_scale": jnp.float32(1.0),
            "input_scale": jnp.float32(1.0)}

  def step(p, h, x):
    rnn = p["rnn"].replace(weight_scale=p["weight_scale"],
                           U=p["input_scale"] * jnp.ones_like(p["rnn"].U))
    return ex.rnn.step(rnn, h, x)

  return ex.Model(init=init, step=step,
                  state0=lambda key: jax.random.normal(key, (1,)),
                  input_shape=(1,), name=f"scalar_rnn_{activation}",
                  settings={"activation": activation})


def compute(config: dict) -> dict[str, np.ndarray]:
  """The three measurements.

  Args:
    config: ``hidden`` (n), ``length`` (T), ``seeds``, ``depths``,
      ``n_scales``, ``scale_range`` (g grid of (a)), ``state_scales`` (s of
      (b)), ``state_gain`` (g of (b)), ``contraction`` (w of (c)),
      ``activations`` and ``input_stds`` (of (c)), ``long_length`` (T of
      (c)), ``key`` (int).

  Returns:
    (a) ``weight_scales``: (n_g,). ``depths``: (nD,). ``stack_rate``,
    ``stack_rate_low``, ``stack_rate_high``: (nD, n_g) nats/step.
    ``stack_critical``, ``stack_critical_low``, ``stack_critical_high``:
    (nD,). ``stack_theory``: (n_g,) ``rnn_lyapunov_max("tanh", g)``.
    ``stack_log_state_norm``: (nD, n_g, T, seeds).
    (b) ``state_scales``: (nS,). ``state_log_growth``: (nS, T, seeds).
    ``state_rate``, ``state_rate_low``, ``state_rate_high``: (nS,) slope
    after the first step. ``state_first_step``: (nS, seeds) log growth of
    step 1. ``state_max_log_norm_after``: (nS,) the largest ``log ||h_t||``,
    t >= 1, over seeds (tanh: at most ``0.5 log n``).
    (c) ``contraction_log_growth``: (nA, nX, long_length, seeds).
    ``contraction_log_state_norm``: same shape. ``contraction_rate``,
    ``_low``, ``_high``: (nA, nX). ``input_stds``: (nX,). ``hidden``: ().
  """
  n, T, seeds = (int(config[k]) for k in ("hidden", "length", "seeds"))
  key = int(config["key"])
  gs = np.linspace(*config["scale_range"], int(config["n_scales"]))
  depths = [int(d) for d in config["depths"]]
  out = {"weight_scales": gs, "depths": np.array(depths), "hidden":
         np.array(n)}

  # (a) one sweep per depth; state0 given (a unit draw), so (b) reuses the
  # depth-1 program.
  rates, crits, states = [], [], []
  for d in depths:
    z = _unit_state(key, (d, n))
    m = ex.sweep(stacked_rnn(n, d), weight_scales=gs, length=T, seeds=seeds,
                 key=key, state0=z, progress=False)
    rates.append(m.rate(interval=0.9))
    crits.append(m.critical_scale(interval=0.9))
    states.append(m.log_state_norm)
  for name, ests in (("stack_rate", rates), ("stack_critical", crits)):
    out[name] = np.array([e.value for e in ests], np.float64)
    out[f"{name}_low"] = np.array([e.low for e in ests], np.float64)
    out[f"{name}_high"] = np.array([e.high for e in ests], np.float64)
  out["stack_theory"] = np.asarray(ex.theory.rnn_lyapunov_max("tanh", gs))
  out["stack_log_state_norm"] = np.stack(states)

  # (b) the initial state's scale, depth-1 stack at g = state_gain.
  s_values = np.asarray(config["state_scales"], np.float64)
  z = _unit_state(key, (1, n))
  g0 = float(config["state_gain"])
  maps = [ex.sweep(stacked_rnn(n, 1), weight_scales=[g0], length=T,
                   seeds=seeds, key=key, state0=s * z, progress=False)
          for s in s_values]
  after = [m.rate(burn_in=1, interval=0.9) for m in maps]
  out["state_scales"] = s_values
  out["state_gain"] = np.array(g0)
  out["state_log_growth"] = np.stack([m.log_growth[0] for m in maps])
  out["state_first_step"] = np.stack([m.log_growth[0, 0] for m in maps])
  out["state_rate"] = np.array([float(e.value[0]) for e in after])
  out["state_rate_low"] = np.array([float(e.low[0]) for e in after])
  out["state_rate_high"] = np.array([float(e.high[0]) for e in after])
  out["state_max_log_norm_after"] = np.array(
      [np.max(m.log_state_norm[0, :]) for m in maps])

  # (c) the scalar contraction with inputs.
  w = float(config["contraction"])
  TL = int(config["long_length"])
  stds = np.asarray(config["input_stds"], np.float64)
  growth, norms, c_rates = [], [], []
  for act in config["activations"]:
    m = ex.sweep(scalar_rnn(act), grid={"input_scale": stds,
                                        "weight_scale": [w]},
                 length=TL, seeds=seeds, key=key, inputs="gaussian",
                 progress=False).sel(weight_scale=0)
    growth.append(m.log_growth)
    norms.append(m.log_state_norm)
    c_rates.append(m.rate(burn_in=0, interval=0.9))
  out["activations_c"] = np.array(list(config["activations"]))
  out["input_stds"] = stds
  out["contraction"] = np.array(w)
  out["contraction_log_growth"] = np.array(growth)
  out["contraction_log_state_norm"] = np.array(norms)
  for f, name in (("value", ""), ("low", "_low"), ("high", "_high")):
    out[f"contraction_rate{name}"] = np.array(
        [getattr(e, f) for e in c_rates], np.float64)
  return out


def plot(results: dict[str, np.ndarray]):
  """(a) stacked rates vs g; (b) growth vs time per initial-state scale;
  (c) the w = 0.7 contraction under inputs."""
  fig, (ax_a, ax_b, ax_c) = plotting.new_figure(1, 3, width="full",
                                                height=3.0)
  with plotting.paper_style():
    gs = results["weight_scales"]
    for i, d in enumerate(results["depths"]):
      c = f"C{i}"
      ax_a.fill_between(gs, results["stack_rate_low"][i],
                        results["stack_rate_high"][i], color=c, alpha=0.3,
                        lw=0)
      gc = results["stack_critical"][i]
      lo, hi = (results["stack_critical_low"][i],
                results["stack_critical_high"][i])
      ax_a.plot(gs, results["stack_rate"][i], "o-", ms=2, lw=0.7, color=c,
                label=f"D = {d}: $g_c$ = {gc:.2f} [{lo:.2f}, {hi:.2f}]")
    ax_a.plot(gs, results["stack_theory"], "k--", lw=0.8,
              label="bottom layer, mean field")
    ax_a.axhline(0, color="0.5", lw=0.5)
    ax_a.set_xlabel("weight scale $g$ (every layer)")
    ax_a.set_ylabel("growth rate (nats / step)")
    ax_a.set_title("stacked tanh RNNs, D layers")
    ax_a.legend(fontsize=5.5, loc="lower right")

    steps = np.arange(1, results["state_log_growth"].shape[1] + 1)
    for i, s in enumerate(results["state_scales"]):
      c = f"C{i}"
      ax_b.plot(steps, np.mean(results["state_log_growth"][i], -1), "-",
                color=c, lw=1.0,
                label=f"s = {s:g}: rate after step 1 "
                      f"{results['state_rate'][i]:+.3f} "
                      f"[{results['state_rate_low'][i]:+.3f}, "
                      f"{results['state_rate_high'][i]:+.3f}]")
    ax_b.set_xlabel("step $t$")
    ax_b.set_ylabel("log growth (nats, seed mean)")
    ax_b.set_title(f"initial state $h_0$ = s z, g = "
                   f"{float(results['state_gain']):g}")
    ax_b.legend(fontsize=5, loc="upper left")

    w = float(results["contraction"])
    TL = results["contraction_log_growth"].shape[-2]
    t = np.arange(1, TL + 1)
    styles = ["-", ":", "--", "-."]
    for a, act in enumerate(results["activations_c"]):
      for k, sd in enumerate(results["input_stds"]):
        ax_c.plot(t, np.mean(results["contraction_log_growth"][a, k], -1),
                  styles[a % 4], color=f"C{k}", lw=1.0,
                  label=(f"$\\sigma_x$ = {sd:g}" if a == 0 else None))
      ax_c.plot([], [], styles[a % 4], color="0.4", lw=1.0, label=act)
    ax_c.plot(t, t * np.log(w), color="k", lw=0.5,
              label=f"bound $T \\log {w:g}$")
    rates = "\n".join(
        f"{act}: " + ", ".join(f"{r:+.3f}" for r in row)
        for act, row in zip(results["activations_c"],
                            results["contraction_rate"]))
    ax_c.text(0.97, 0.97, "rates (nats/step) by $\\sigma_x$:\n" + rates,
              transform=ax_c.transAxes, ha="right", va="top", fontsize=5.5)
    ax_c.set_xlabel("inputs seen $T$")
    ax_c.set_ylabel("$\\log |dh_T / dh_0|$ (seed mean)")
    ax_c.set_title(f"w = {w:g}: never explodes")
    ax_c.legend(fontsize=5.5, loc="lower left")
    plotting.label_panels([ax_a, ax_b, ax_c])
    n_seeds = results["state_log_growth"].shape[-1]
    fig.suptitle(
        f"Seed claims measured ({int(results['hidden'])} units in a, b; "
        f"{n_seeds} seeds; 90% bootstrap intervals)", fontsize=7)
  return fig


def _unit_state(key: int, shape) -> np.ndarray:
  """The initial state ``z`` (a fixed N(0, 1) draw) of (a) and (b)."""
  return np.asarray(jax.random.normal(jax.random.fold_in(
      jax.random.key(key), 3), shape))


if __name__ == "__main__":
  import sys

  from reproduce import run_script

  sys.exit(run_script(__file__))
