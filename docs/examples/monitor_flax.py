"""Monitor a flax MLP's gradients in your own training loop, beside the map.

The tutorial "Monitor your training loop" shows this file; tests/test_docs.py
runs it. ``python docs/examples/monitor_flax.py > docs/examples/monitor_flax.out``
draws the run beside the map into ``docs/images/monitor_flax.png`` (or the
path given as an argument); the page shows both.
"""

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import exploding as ex

width, depth, g = 64, 12, 1.5      # a tanh MLP at weight scale g (sigma_w)


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    w_init = nn.initializers.variance_scaling(g**2, "fan_in", "normal")
    for _ in range(depth):
      x = jnp.tanh(nn.Dense(width, use_bias=False, kernel_init=w_init)(x))
    return x


model = MLP()
kx, ky, kp = jax.random.split(jax.random.key(0), 3)
x = jax.random.normal(kx, (128, width))
y = jax.random.normal(ky, (128, width))
params = model.init(kp, x)["params"]
loss = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)

tx = optax.chain(
    ex.monitor(history=1000, clip_norm=1.0),   # first: sees the raw gradient
    optax.clip_by_global_norm(1.0),
    ex.skip_if_log_norm_jumps(optax.adam(1e-3), k=np.log(10.0)),
)
opt_state = tx.init(params)


@jax.jit
def train_step(params, opt_state):
  value, grads = jax.value_and_grad(loss)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, value


for step in range(200):
  params, opt_state, value = train_step(params, opt_state)

h = ex.monitor_history(opt_state)      # numpy arrays, oldest step first
# leaves in jax.tree order (Dense_0, Dense_1, Dense_10, ...): sort by depth
layer = sorted(range(depth), key=lambda i: int(h.leaf_names[i][6:-7]))
print(f"{len(h.step)} steps, {len(h.leaf_names)} layers "
      f"({h.leaf_names[layer[0]]} ... {h.leaf_names[layer[-1]]}); "
      f"last loss {value:.3f}")
print(f"log ||g||: first {h.log_norm[0]:.2f}, last {h.log_norm[-1]:.2f}; "
      f"clip ratio last {h.clip_ratio[-1]:.2f}; "
      f"zero fraction max {h.zero_fraction.max():.2g}; "
      f"skipped {int(opt_state[2].total_skips)}")

# What the map predicts for the same model: backprop growth over its layers
# (ex.mlp: z = g * (W0 @ h), a = tanh(z); the input N(0, 1) per entry).
m = ex.sweep("mlp", grid={"weight_scale": [g]}, length=depth, width=width,
             batch=128, activation="tanh", method="vjp", seeds=8,
             progress=False)
fig = ex.plot_monitor(h, m, scale=g)

# At step 0 the run is one draw of the network the map measures. Panel (b)'s
# prediction for layer j, relative to the output layer: backprop growth over
# depth - 2 - j factors plus the forward state norms entering the layers
# (ex.plot_monitor's docstring; it leaves out the phi'(z_j) factor).
run = h.leaf_log_norm[0, layer] - h.leaf_log_norm[0, layer[-1]]
j = np.arange(1, depth - 1)
predicted = (m.log_growth[0, depth - 2 - j]
             + m.log_state_norm[0, j - 1] - m.log_state_norm[0, depth - 2])
gap = run[j] - np.median(predicted, axis=-1)
print(f"step 0, layer 1 over layer {depth - 1}: run {run[1]:.2f}, map "
      f"{np.median(predicted[0]):.2f} [{predicted[0].min():.2f}, "
      f"{predicted[0].max():.2f}] ({predicted.shape[-1]} seeds); run - map "
      f"over layers 1..{depth - 2}: {gap.min():.2f} to {gap.max():.2f}")

if __name__ == "__main__":
  out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "images",
      "monitor_flax.png")
  fig.savefig(out, dpi=120, bbox_inches="tight")
