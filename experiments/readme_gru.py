"""The README's "your own model" example: a flax GRUCell mapped by ex.sweep.

Runs the README snippet verbatim and writes ``figures/readme_gru_map.png``:
``python experiments/readme_gru.py``.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import exploding as ex

# --- README snippet (keep in sync with README.md) ---
n, cell, x0 = 64, nn.GRUCell(features=64), jnp.zeros(1)   # no input


def init(key):                         # params are data: arrays and knobs
  return {"cell": cell.init(key, jnp.zeros(n), x0)["params"],
          "weight_scale": jnp.float32(1.0)}


def step(p, h, x):                     # the knob scales the recurrent kernels
  c = {k: {**v, "kernel": p["weight_scale"] * v["kernel"]} if k[0] == "h"
       else v for k, v in p["cell"].items()}
  return cell.apply({"params": c}, h, x0)[0]


gru = ex.Model(init, step, state0=lambda key: jax.random.normal(key, (n,)))
m = ex.sweep(gru, grid={"weight_scale": np.linspace(0.5, 8, 32)},
             length=256, seeds=4)
print(m.critical_scale())
# --- end of snippet ---

if __name__ == "__main__":
  out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))), "figures", "readme_gru_map.png")
  fig = ex.plotting.plot_growth_map(m, title="flax GRUCell, width 64 "
                                    "(recurrent kernels x g), jvp")
  ex.plotting.save_figure(fig, out[:-4], formats=("png",))
  print("wrote", out)
