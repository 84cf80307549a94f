"""Sweeps across processes: 2 local processes x 2 host devices, as on a
multi-host TPU pod slice or several GPU hosts (``jax.distributed``), give
the maps of 1 process with 4 host devices."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

from tests import _multidevice

_SWEEPS = """
import numpy as np, jax, exploding as ex
res = {}
for model, kw in [("rnn", dict(hidden=16)), ("mlp", dict(width=8,
                                                          activation="relu"))]:
  for method in ["jvp", "vjp"]:
    m = ex.sweep(model, weight_scales=np.linspace(0.5, 2, 7), length=20,
                 seeds=3, method=method, progress=False, **kw)
    res[f"{model}-{method}"] = np.asarray(m.log_growth).tolist()
res["devices"] = jax.device_count()
res["processes"] = jax.process_count()
"""

_WORKER = """
import os, sys, json
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[2],
                           num_processes=2, process_id=int(sys.argv[1]))
""" + _SWEEPS + """
if jax.process_index() == 0:
  print(json.dumps(res))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process_with_four_devices():
  address = f"localhost:{_free_port()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(i), address],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  multi = json.loads(outs[0][0].strip().splitlines()[-1])
  single = _multidevice.run(textwrap.dedent(_SWEEPS) +
                            "\nimport json\nprint(json.dumps(res))",
                            devices=4)
  assert (multi["devices"], multi["processes"]) == (4, 2)
  assert (single["devices"], single["processes"]) == (4, 1)
  for key in ("rnn-jvp", "rnn-vjp", "mlp-jvp", "mlp-vjp"):
    np.testing.assert_allclose(multi[key], single[key], rtol=1e-6,
                               atol=1e-6, err_msg=key)
