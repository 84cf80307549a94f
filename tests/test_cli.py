"""The ``exploding`` command, run as a user runs it."""

import os
import subprocess
import sys

import numpy as np
import pytest

import exploding as ex


def _run(*args, cwd=None, **env_vars):
  env = dict(os.environ, MPLBACKEND="Agg", **env_vars)
  for k in [k for k, v in env.items() if v is None]:
    del env[k]
  return subprocess.run([sys.executable, "-m", "exploding.cli", *args],
                        capture_output=True, text=True, env=env, cwd=cwd,
                        timeout=300)


def test_sweep_writes_map_and_plot(tmp_path):
  out, png = tmp_path / "map.npz", tmp_path / "map.png"
  proc = _run("sweep", "rnn", "--activation", "tanh", "--scales",
              "0.5:2.0:6", "--length", "40", "--seeds", "2", "--hidden", "16",
              "--out", str(out), "--plot", str(png), "--no-progress")
  assert proc.returncode == 0, proc.stderr
  m = ex.GradientMap.load(out)
  assert m.log_growth.shape == (6, 40, 2)
  np.testing.assert_allclose(m.weight_scales, np.linspace(0.5, 2.0, 6))
  assert m.config["activation"] == "tanh" and m.config["hidden"] == 16
  # The CLI exposes one host device per core when XLA_FLAGS is unset.
  if "XLA_FLAGS" not in os.environ:
    assert m.config["device_count"] == (os.cpu_count() or 1)
  assert png.stat().st_size > 10_000
  assert "critical scale" in proc.stdout


def test_rerun_reuses_compiled_programs_from_the_cache(tmp_path):
  """The CLI turns on jax's persistent cache: a second process finds every
  program there (no new entries) and gives the same map."""
  cache = tmp_path / "xdg"
  args = ("sweep", "rnn", "--scales", "0.5:2.0:4", "--length", "20",
          "--seeds", "2", "--hidden", "8", "--no-progress")
  env = dict(XDG_CACHE_HOME=str(cache), EXPLODING_NO_XLA_CACHE=None,
             JAX_COMPILATION_CACHE_DIR=None, JAX_LOG_COMPILES="1",
             # every program, however fast this machine compiles it
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  first = _run(*args, "--out", str(tmp_path / "a.npz"), **env)
  assert first.returncode == 0, first.stderr
  entries = sorted(p.name for p in (cache / "exploding" / "xla").iterdir())
  assert any(name.startswith("jit_local") for name in entries), entries
  assert any(name.startswith("jit_draw") for name in entries), entries
  second = _run(*args, "--out", str(tmp_path / "b.npz"), **env)
  assert second.returncode == 0, second.stderr
  for program in ("jit_draw", "jit_local"):   # read back, not recompiled
    assert f"Persistent compilation cache hit for '{program}'" in \
        second.stderr
    assert f"Persistent compilation cache hit for '{program}'" not in \
        first.stderr
  assert sorted(p.name for p in (cache / "exploding" / "xla").iterdir()) \
      == entries
  a = ex.GradientMap.load(tmp_path / "a.npz")
  b = ex.GradientMap.load(tmp_path / "b.npz")
  np.testing.assert_array_equal(a.log_growth, b.log_growth)


@pytest.mark.parametrize("args,match", [
    (["sweep", "rnn", "--scales", "0.5:2"], "--scales"),
    (["sweep", "rnn", "--length", "zero"], "--length"),
    (["sweep", "gru"], "invalid choice"),
    (["sweep", "rnn", "--activation", "swish", "--length", "4"], "activation"),
    (["sweep", "rnn", "--scales=-1:2:4", "--length", "4"], "weight_scales"),
    (["sweep", "rnn", "--length", "0"], "length"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(args, match, capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)   # main() sets it; undo
  try:
    code = cli.main(args)
  except SystemExit as e:
    code = e.code
  assert code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and match in lines[0], lines


def test_bad_arguments_in_a_real_process():
  proc = _run("sweep", "rnn", "--length", "0")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "exploding sweep: error: length must be >= 1, got 0"]


def test_sweep_help_documents_every_flag():
  proc = _run("sweep", "--help")
  assert proc.returncode == 0
  for flag in ["--scales", "--length", "--seeds", "--hidden", "--activation",
               "--method", "--bias-scale", "--init", "--out", "--plot",
               "--cache-dir", "--chunk-size", "--batchnorm", "--residual",
               "--forget-bias", "--dtype", "--key"]:
    assert flag in proc.stdout


def test_list_and_reproduce_reach_the_figure_runner(capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert cli.main(["list"]) == 0
  listed = capsys.readouterr().out.splitlines()
  assert len(listed) >= 13 and listed[0].startswith("fig01")
  assert cli.main(["reproduce", "--only", "nosuchfigure"]) == 2
