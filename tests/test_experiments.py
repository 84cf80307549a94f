"""The figure scripts and their runner (experiments/).

Every ``experiments/fig*.py`` is picked up by discovery, so a figure added
later is tested without touching this file: ``compute(QUICK)`` must return a
dict of finite numpy arrays (keys listed in the module's ``ALLOW_NONFINITE``
may hold NaN/inf, by design) and ``plot`` must return a Figure.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

EXPERIMENTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
FIGURE_PATHS = sorted(glob.glob(os.path.join(EXPERIMENTS, "fig*.py")))


def _load(path: str, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def reproduce():
  """The runner, imported without leaving its XLA_FLAGS default behind.

  reproduce.py sets XLA_FLAGS when unset (for the sweeps); here jax is
  already initialised, and tests that spawn subprocesses must not inherit it.
  """
  had_flags = "XLA_FLAGS" in os.environ
  saved = os.environ.get("XLA_FLAGS")
  try:
    yield _load(os.path.join(EXPERIMENTS, "reproduce.py"),
                "_test_exploding_reproduce")
  finally:
    if had_flags:
      os.environ["XLA_FLAGS"] = saved
    else:
      os.environ.pop("XLA_FLAGS", None)


def test_discovery_finds_the_figures(reproduce):
  names = list(reproduce.discover_figures())
  assert names == sorted(names)
  assert names == [os.path.basename(p)[:-3] for p in FIGURE_PATHS]
  for prefix in ("fig01", "fig02", "fig03"):
    assert any(n.startswith(prefix) for n in names)


@pytest.mark.parametrize(
    "path", FIGURE_PATHS, ids=[os.path.basename(p)[:-3] for p in FIGURE_PATHS])
def test_figure_contract(path, reproduce):
  module = reproduce.load_figure(path)
  for attr in ("compute", "plot", "QUICK", "FULL"):
    assert hasattr(module, attr), f"{path} lacks {attr}"
  assert isinstance(module.QUICK, dict) and isinstance(module.FULL, dict)

  results = module.compute(module.QUICK)
  assert isinstance(results, dict) and results
  arrays = reproduce.as_arrays(results)
  allowed = set(getattr(module, "ALLOW_NONFINITE", ()))
  assert allowed <= set(arrays), "ALLOW_NONFINITE names unknown keys"
  for key, value in arrays.items():
    assert isinstance(results[key], (np.ndarray, np.generic, int, float)), (
        f"{key}: {type(results[key]).__name__}, not a numpy array")
    if key not in allowed and np.issubdtype(value.dtype, np.number):
      assert np.all(np.isfinite(value)), f"{key} has NaN/inf"

  fig = module.plot(arrays)
  assert isinstance(fig, Figure)
  assert fig.axes


def test_runner_writes_png_and_pdf(reproduce, tmp_path, capsys):
  out = tmp_path / "figures"
  assert reproduce.main(
      ["--quick", "--out", str(out), "--no-cache", "--only", "fig01",
       "--format", "png,pdf"]) == 0
  names = [n for n in reproduce.discover_figures() if n.startswith("fig01")]
  for name in names:
    for ext in ("png", "pdf"):
      path = out / f"{name}.{ext}"
      assert path.stat().st_size > 1000, path
  text = capsys.readouterr().out
  assert "computed" in text and names[0] in text


def test_runner_cache_hit_and_corrupt_file(reproduce, tmp_path, capsys):
  args = ["--quick", "--out", str(tmp_path / "out"), "--cache-dir",
          str(tmp_path / "cache"), "--only", "fig01", "--format", "png"]
  assert reproduce.main(args) == 0
  assert " computed " in capsys.readouterr().out
  cached = glob.glob(str(tmp_path / "cache" / "*.npz"))
  assert len(cached) == 1

  assert reproduce.main(args) == 0
  assert " cached " in capsys.readouterr().out

  with open(cached[0], "wb") as f:
    f.write(b"not a zip file")
  assert reproduce.main(args) == 0
  captured = capsys.readouterr()
  assert " computed " in captured.out and "unreadable" in captured.err
  with np.load(cached[0]) as data:  # rewritten, readable again
    assert data.files


def test_cache_key_depends_on_config(reproduce):
  a = reproduce.cache_key("fig01_x", {"max_length": 10})
  assert a == reproduce.cache_key("fig01_x", {"max_length": 10})
  assert a != reproduce.cache_key("fig01_x", {"max_length": 11})
  assert a != reproduce.cache_key("fig02_x", {"max_length": 10})


def test_list_and_bad_only(reproduce, capsys):
  assert reproduce.main(["--list"]) == 0
  listing = capsys.readouterr().out
  assert "fig01" in listing and "fig03" in listing
  assert reproduce.main(["--list", "--only", "fig02,fig03"]) == 0
  listing = capsys.readouterr().out
  assert "fig01" not in listing and "fig02" in listing and "fig03" in listing
  assert reproduce.main(["--only", "fig99"]) == 2
  assert "fig99" in capsys.readouterr().err
