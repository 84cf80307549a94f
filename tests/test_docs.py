"""The documentation site: ``mkdocs build --strict`` (warnings are errors)
into a temporary folder, when the docs toolchain is installed
(``pip install -e '.[docs]'``, as CI does); the API reference covers every
public name; the gallery carries the README's claims; the monitor tutorial's
example runs and follows the map at initialisation."""

from __future__ import annotations

import html
import importlib
import inspect
import os
import pathlib
import re
import runpy
import subprocess
import sys

import jax
import numpy as np
import pytest

import exploding as ex

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Modules whose __all__ is public beyond the top-level names.
_MODULES = ["activations", "jacobian", "maps", "sweep", "remedies", "monitor",
            "cli", "models.model"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
  for name in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python",
               "material"):
    pytest.importorskip(name)
  out = tmp_path_factory.mktemp("site")
  env = dict(os.environ, NO_MKDOCS_2_WARNING="1")   # material's banner
  proc = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
       str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
  return out


def _text(path: pathlib.Path) -> str:
  return path.read_text(encoding="utf-8")


def _plain(markup: str) -> str:
  """HTML -> its text, whitespace collapsed."""
  return " ".join(html.unescape(re.sub(r"<[^>]+>", "", markup)).split())


def _kind(obj) -> str:
  if inspect.ismodule(obj):
    return "module"
  if inspect.isclass(obj):
    return "class"
  if inspect.isroutine(inspect.unwrap(obj)) or callable(obj):
    return "function"
  return "attribute"


def test_every_public_name_is_in_the_api_reference(site):
  """Each name of ``exploding.__all__`` and of each public module's
  ``__all__`` has a heading of its kind (module, class, function,
  attribute) under one of the paths it is public at."""
  pages = "".join(_text(p) for p in (site / "api").rglob("*.html"))
  headings = dict(re.findall(
      r'<h\d id="(exploding[\w.]*)"[^>]*>\s*<code class="doc-symbol '
      r'doc-symbol-heading doc-symbol-(\w+)"', pages))
  modules = {"exploding": ex}
  for name in ex.__all__:
    if inspect.ismodule(getattr(ex, name)):
      modules[f"exploding.{name}"] = getattr(ex, name)
  for name in _MODULES:
    modules[f"exploding.{name}"] = importlib.import_module(f"exploding.{name}")
  missing = []
  for path, module in modules.items():
    tail = path.split(".", 1)[-1]
    if tail in ex.__all__ and getattr(ex, tail) is module:   # ex.theory
      assert headings.get(path) == "module", path
    for name in getattr(module, "__all__", ()):
      obj = getattr(module, name)
      public = [f"{p}.{name}" for p, m in modules.items()
                if name in getattr(m, "__all__", ()) and getattr(m, name)
                is obj]
      if not any(headings.get(p) == _kind(obj) for p in public):
        missing.append(f"{path}.{name} ({_kind(obj)})")
  assert not missing, missing
  assert len(headings) > 150


def test_gallery_shows_every_figure_with_the_readme_claim(site):
  gallery = _text(site / "gallery" / "index.html")
  readme = _text(ROOT / "README.md")
  rows = re.findall(r'^\| <img src="figures/(fig\d+\w*)\.png"[^|]*\|[^|]*\|'
                    r"\s*(.+?)\s*\|\s*$", readme, flags=re.MULTILINE)
  assert len(rows) >= 13
  figures = {p.stem for p in (ROOT / "figures").glob("fig*.png")}
  text = _plain(gallery)
  for name, claim in rows:
    assert f'src="../figures/{name}.png"' in gallery, name
    assert (site / "figures" / f"{name}.png").is_file()
    assert _plain(re.sub(r"`([^`]*)`", r"\1", claim)) in text, name
  for name in figures - {n for n, _ in rows}:   # no README row yet
    assert f'src="../figures/{name}.png"' in gallery, name


def test_pages_show_the_commands_and_code_the_tests_run(site):
  from exploding import cli
  page = _plain(_text(site / "api" / "cli" / "index.html"))
  assert "--dtype {float16,bfloat16,float32,float64}" in page
  assert "--no-cache always compute" in page        # the runner's flags
  assert cli.__all__ == ["main"]
  own = _plain(_text(site / "tutorials" / "own_model" / "index.html"))
  source = _text(ROOT / "experiments" / "readme_gru.py")
  snippet = source.split("# --- README snippet")[1].split("\n", 1)[1]
  snippet = snippet.split("# --- end of snippet")[0]
  assert " ".join(snippet.split()) in own
  monitor = _plain(_text(site / "tutorials" / "monitor" / "index.html"))
  example = _text(ROOT / "docs" / "examples" / "monitor_flax.py")
  assert " ".join(example.split()) in monitor
  start = _plain(_text(site / "getting_started" / "index.html"))
  assert "pip install -e '.[test]'" in start
  assert "exploding reproduce" in start and "pytest" in start
  assert "mkdocs build --strict" in start


def test_monitor_example_records_the_gradient_and_matches_the_map():
  """The tutorial's script: its step-0 records equal the gradient at the
  initial params computed here in float64, and the step-0 profile over the
  layers follows the map's prediction."""
  ns = runpy.run_path(str(ROOT / "docs" / "examples" / "monitor_flax.py"),
                      run_name="docs_example")
  h, m, depth = ns["h"], ns["m"], ns["depth"]
  assert len(h.step) == 200 and h.step[0] == 0
  params0 = ns["model"].init(ns["kp"], ns["x"])["params"]
  grads = jax.grad(ns["loss"])(params0)
  names = [jax.tree_util.keystr(k, simple=True, separator="/")
           for k, _ in jax.tree_util.tree_flatten_with_path(grads)[0]]
  assert h.leaf_names == tuple(names)
  norms = [np.log(np.linalg.norm(np.asarray(g, np.float64)))
           for g in jax.tree.leaves(grads)]
  np.testing.assert_allclose(h.leaf_log_norm[0], norms, atol=1e-5)
  assert np.all(h.zero_fraction == 0) and np.all(np.isfinite(h.log_norm))
  # Step 0 against the map's prediction (plot_monitor's, without phi'):
  # the gradient grows towards the input (g = 1.5 is chaotic for tanh) and
  # the run stays within 0.35 nats of the prediction at every layer.
  run, gap = ns["run"], ns["gap"]
  assert run[1] > run[depth - 2] + 0.3
  assert np.all(np.abs(gap) < 0.35), gap
  assert h.clip_ratio.shape == h.log_norm.shape
  np.testing.assert_allclose(
      h.clip_ratio, np.minimum(1, 1.0 / np.exp(h.log_norm)), rtol=1e-5)
