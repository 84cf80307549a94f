"""Runs a snippet in a fresh interpreter with N fake CPU devices.

XLA reads ``--xla_force_host_platform_device_count`` once, when jax starts,
so a multi-device check needs its own process."""

import json
import os
import subprocess
import sys
import textwrap


def run(code: str, devices: int = 8, timeout: float = 300) -> dict:
  """Executes ``code`` (which must ``print(json.dumps(result))`` last)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                        env=env, capture_output=True, text=True,
                        timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"subprocess failed:\n{proc.stderr[-4000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])
