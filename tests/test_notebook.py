"""The Colab notebook runs end to end on 8 fake devices.

``experiments/colab_tpu.ipynb`` is meant for a Colab runtime with a TPU (any
generation), a GPU or a CPU. Here its code cells run, in order, in a fresh
Python process that exposes 8 XLA host devices (``XLA_FLAGS`` must be set
before jax starts, hence the subprocess) and draws with the Agg backend.
Shell and magic lines (``!pip``, ``%matplotlib``) are skipped: the package is
already installed. The committed outputs are those of a real CPU run
(``nbclient``, skipping the cell tagged ``skip-execution``), and the
notebook says so.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import jax
import jaxlib
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "colab_tpu.ipynb")
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


def _repository_url() -> str:
  tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["urls"]["Repository"]


def test_notebook_is_valid_nbformat_4():
  import nbformat
  nbformat.validate(nbformat.read(NOTEBOOK, as_version=4))
  cells = _load_cells()
  kinds = [c["cell_type"] for c in cells]
  assert kinds[0] == "markdown"
  code = [_source(c) for c in cells if c["cell_type"] == "code"]
  # The devices first, before exploding is installed or imported.
  assert "print(" in code[0] and "jax.devices()" in code[0]
  assert "exploding" not in code[0]
  assert any("ex.sweep(" in s for s in code)
  assert any("plot_growth_map" in s for s in code)
  # Sizes follow the platform found: TPU, GPU, CPU.
  assert all(f'"{p}": (' in "".join(code) for p in ("tpu", "gpu", "cpu"))


def test_notebook_installs_from_the_declared_repository_and_keeps_jax():
  cells = [c for c in _load_cells() if c["cell_type"] == "code"]
  install = [c for c in cells if _source(c).lstrip().startswith("!pip")]
  assert len(install) == 1
  line = _source(install[0])
  assert f'"exploding @ git+{_repository_url()}"' in line
  # Colab brings its own TPU/GPU jaxlib: the install pins jax and jaxlib to
  # the versions the runtime has, so pip cannot replace them.
  others = re.sub(r'"exploding @ [^"]*"', "", line)
  assert re.findall(r"jax\S*", others) == [
      'jax=={jax.__version__}"', 'jaxlib=={jaxlib.__version__}"']
  assert "-U" not in line.split() and "--upgrade" not in line
  assert install[0]["metadata"].get("tags") == ["skip-execution"]


def test_saved_outputs_are_a_cpu_run_and_say_so():
  cells = _load_cells()
  assert "outputs saved in this notebook come from a CPU run" in " ".join(
      _source(cells[0]).split())
  code = [c for c in cells if c["cell_type"] == "code"]
  ran = [c for c in code if "skip-execution" not in
         c["metadata"].get("tags", [])]
  assert all(c["outputs"] for c in ran)
  assert [c["execution_count"] for c in ran] == list(range(1, len(ran) + 1))
  text = "".join("".join(o.get("text", "")) for c in ran
                 for o in c["outputs"])
  assert re.search(r"\d+ devices: cpu \(cpu\)", text), text
  assert "on cpu:" in text and "Warning" not in text
  gc = float(re.search(r"critical scale g_c = ([\d.]+)", text).group(1))
  assert 0.9 < gc < 1.1     # width 128: near the mean-field 1
  assert "image/png" in ran[-1]["outputs"][0]["data"]


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
  assert "8 devices: cpu" in proc.stdout
  assert "on cpu: 64 scales" in proc.stdout
  assert f"jax {jax.__version__}, jaxlib {jaxlib.__version__}" in proc.stdout
  assert math.isfinite(result["critical_scale"])
  # Width 128, T = 256: the crossing lies within 0.1 of the mean-field
  # g_c = 1 (8 seeds: 0.99 [0.98, 1.00] measured on 2 devices).
  assert 0.9 < result["critical_scale"] < 1.1
  assert result["figure"] == "Figure"
