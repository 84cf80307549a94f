"""The Colab notebook runs end to end on 8 fake devices.

``experiments/colab_tpu.ipynb`` is meant for a TPU runtime with 8 cores. Here
its code cells run, in order, in a fresh Python process that exposes 8 XLA
host devices (``XLA_FLAGS`` must be set before jax starts, hence the
subprocess) and draws with the Agg backend. Shell and magic lines (``!pip``,
``%matplotlib``) are skipped: the package is already installed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "experiments", "colab_tpu.ipynb")
MARKER = "NOTEBOOK_RESULT "


def _load_cells() -> list[dict]:
  with open(NOTEBOOK, encoding="utf-8") as f:
    notebook = json.load(f)
  assert notebook["nbformat"] == 4
  return notebook["cells"]


def _source(cell: dict) -> str:
  source = cell["source"]
  return source if isinstance(source, str) else "".join(source)


def _script() -> str:
  """The code cells without shell/magic lines, plus a machine-readable
  summary of what the notebook computed."""
  blocks = []
  for cell in _load_cells():
    if cell["cell_type"] != "code":
      continue
    lines = [line for line in _source(cell).splitlines()
             if not line.lstrip().startswith(("!", "%"))]
    blocks.append("\n".join(lines))
  blocks.append(
      "import json as _json\n"
      f"print({MARKER!r} + _json.dumps({{\n"
      "    'n_devices': jax.device_count(),\n"
      "    'critical_scale': critical_scale,\n"
      "    'figure': type(fig).__name__}))\n")
  return "\n\n".join(blocks)


def test_notebook_is_valid_nbformat_4():
  cells = _load_cells()
  kinds = [c["cell_type"] for c in cells]
  assert kinds[0] == "markdown"
  sources = [_source(c) for c in cells]
  install = [s for s in sources if s.lstrip().startswith("!pip")]
  assert len(install) == 1
  # Colab brings its own TPU jaxlib: the notebook must not reinstall jax.
  assert "jax" not in install[0].replace("exploding", "")
  assert any("jax.devices()" in s and "jax.device_count()" in s
             for s in sources)
  assert any("ex.sweep(" in s for s in sources)
  assert any("plot_growth_map" in s for s in sources)


def test_notebook_runs_on_eight_devices(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  env["JAX_PLATFORMS"] = "cpu"
  env["MPLBACKEND"] = "Agg"
  script = tmp_path / "notebook.py"
  script.write_text(_script(), encoding="utf-8")
  proc = subprocess.run([sys.executable, str(script)], env=env,
                        cwd=str(tmp_path), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith(MARKER)]
  assert lines, proc.stdout[-3000:]
  result = json.loads(lines[-1][len(MARKER):])
  assert result["n_devices"] == 8
  assert "8 devices" in proc.stdout
  assert math.isfinite(result["critical_scale"])
  # Inside the swept range (0.5, 2.0); finite width and length put it
  # somewhat above the mean-field g_c = 1.
  assert 0.5 < result["critical_scale"] < 2.0
  assert result["figure"] == "Figure"
