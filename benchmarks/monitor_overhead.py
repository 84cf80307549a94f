"""Overhead of ``ex.monitor`` per training step on small flax models.

Two models train on random data with ``optax.adam`` alone and with the
monitor chained in front, each as one jitted step (gradient, optimiser
update, parameter update) called from a Python loop, as a user's loop
would:

* ``cnn``: the CNN of flax's MNIST example (two 3x3 convolutions with 32
  and 64 features, average pooling, dense 256, dense 10; 825k parameters in
  8 leaves), batch ``--batch`` of 28x28 images, cross-entropy;
* ``mlp``: a tanh MLP, 4 hidden layers of 256 on 64 inputs (214k parameters
  in 10 leaves), batch ``--batch``, squared error: a worst case, as little
  compute per parameter as a network gets, so the monitor's passes over
  the gradient weigh the most.
 A round times
``--steps`` steps of every variant, in an order shuffled per round (seeded),
after a warm-up; the overhead of a variant is its time over the baseline's
in the same round, minus one, in wall time and in process CPU time (all
threads; steadier than wall time on a shared machine). Reported: the
median over ``--rounds`` rounds and the 10-90% range over rounds.

  python benchmarks/monitor_overhead.py            # a few minutes on CPU
  python benchmarks/monitor_overhead.py --model mlp --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import exploding as ex


class CNN(nn.Module):
  """flax's MNIST example CNN."""

  @nn.compact
  def __call__(self, x):
    x = nn.avg_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), (2, 2))
    x = nn.avg_pool(nn.relu(nn.Conv(64, (3, 3))(x)), (2, 2), (2, 2))
    x = nn.relu(nn.Dense(256)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(x)


class MLP(nn.Module):
  width: int
  depth: int

  @nn.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = jnp.tanh(nn.Dense(self.width)(x))
    return nn.Dense(1)(x)


def variants(steps_total):
  adam = lambda: optax.adam(1e-3)
  return {
      "adam": adam(),
      "monitor + adam": optax.chain(ex.monitor(), adam()),
      f"monitor(history={steps_total}) + adam": optax.chain(
          ex.monitor(history=steps_total), adam()),
      "monitor(clip_norm) + clip + adam": optax.chain(
          ex.monitor(clip_norm=1.0), optax.clip_by_global_norm(1.0), adam()),
      "clip + adam": optax.chain(optax.clip_by_global_norm(1.0), adam()),
      "monitor + skip_if_log_norm_jumps(adam)": optax.chain(
          ex.monitor(), ex.skip_if_log_norm_jumps(adam(), 3.0)),
  }


def problem(name, batch, key):
  """``(model, x, y, loss(out, y))`` on random data."""
  kx, ky = jax.random.split(key)
  if name == "cnn":
    x = jax.random.normal(kx, (batch, 28, 28, 1))
    y = jax.random.randint(ky, (batch,), 0, 10)
    return CNN(), x, y, lambda out, y: jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(out, y))
  x = jax.random.normal(kx, (batch, 64))
  y = jnp.sum(x[:, :4], axis=1, keepdims=True)
  return MLP(256, 4), x, y, lambda out, y: jnp.mean((out - y) ** 2)


def make_step(model, tx, x, y, loss_fn=None):
  loss_fn = loss_fn or (lambda out, y: jnp.mean((out - y) ** 2))

  def loss(p):
    return loss_fn(model.apply({"params": p}, x), y)

  @jax.jit
  def step(p, o):
    g = jax.grad(loss)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o

  return step


def run(model_name, args):
  """Times every variant on one model; prints a table, returns the raw
  per-round seconds per step."""
  kd, kp = jax.random.split(jax.random.key(args.seed))
  model, x, y, loss_fn = problem(model_name, args.batch, kd)
  params0 = model.init(kp, x)["params"]
  n_params = sum(a.size for a in jax.tree.leaves(params0))
  n_leaves = len(jax.tree.leaves(params0))
  total = args.steps * (args.rounds + 1)
  txs = variants(total)
  runs = {}
  for name, tx in txs.items():
    step = make_step(model, tx, x, y, loss_fn)
    p, o = params0, tx.init(params0)
    for _ in range(args.steps):          # warm-up: compile + caches
      p, o = step(p, o)
    jax.block_until_ready(p)
    runs[name] = [step, p, o]

  rng = np.random.default_rng(args.seed)
  wall = {name: [] for name in txs}
  cpu = {name: [] for name in txs}
  for _ in range(args.rounds):
    for name in rng.permutation(list(txs)):
      step, p, o = runs[name]
      t0, c0 = time.perf_counter(), time.process_time()
      for _ in range(args.steps):
        p, o = step(p, o)
      jax.block_until_ready((p, o))
      wall[name].append((time.perf_counter() - t0) / args.steps)
      cpu[name].append((time.process_time() - c0) / args.steps)
      runs[name][1:] = [p, o]

  print(f"\n{model_name}: {n_params} parameters in {n_leaves} leaves, batch "
        f"{args.batch}; {jax.devices()[0].platform} "
        f"({platform.processor() or '?'}, {os.cpu_count()} cores, load "
        f"average {os.getloadavg()[0]:.1f}); {args.rounds} rounds x "
        f"{args.steps} steps")
  print("overhead vs adam alone in the same round: median [10%, 90%] over "
        "rounds")
  print(f"{'variant':40s} {'wall ms':>8s} {'overhead':>22s} {'CPU ms':>8s} "
        f"{'overhead':>22s}")
  for name in txs:
    row = f"{name:40s}"
    for times in (wall, cpu):
      t = np.asarray(times[name])
      lo, mid, hi = np.percentile(t / np.asarray(times["adam"]) - 1,
                                  [10, 50, 90]) * 100
      row += (f" {np.median(t) * 1e3:8.3f} "
              f"{f'{mid:+.1f}% [{lo:+.1f}, {hi:+.1f}]':>22s}")
    print(row, flush=True)
  return {"n_params": n_params, "n_leaves": n_leaves,
          "wall_s_per_step": wall, "cpu_s_per_step": cpu}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", choices=["cnn", "mlp"], nargs="+",
                  default=["cnn", "mlp"])
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--steps", type=int, default=10, help="steps per round")
  ap.add_argument("--rounds", type=int, default=15)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--json", help="also write the raw timings here")
  args = ap.parse_args(argv)

  out = {"config": vars(args), "device": str(jax.devices()[0]), "runs": {}}
  for name in args.model:
    out["runs"][name] = run(name, args)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
