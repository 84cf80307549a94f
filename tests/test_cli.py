"""The ``exploding`` command, run as a user runs it."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import exploding as ex

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, cwd=None, **env_vars):
  env = dict(os.environ, MPLBACKEND="Agg", **env_vars)
  for k in [k for k, v in env.items() if v is None]:
    del env[k]
  return subprocess.run([sys.executable, "-m", "exploding.cli", *args],
                        capture_output=True, text=True, env=env, cwd=cwd,
                        timeout=300)


def test_sweep_writes_map_and_plot(tmp_path):
  # --plot creates its folders, as --out does.
  out, png = tmp_path / "map.npz", tmp_path / "figs" / "deep" / "map.png"
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
    (["sweep", "rnn", "--scales=-1:2:4", "--length", "4"], "--scales"),
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


# Issue 13: each bad argument exits 2 with one line naming it, before the
# sweep computes anything ({tmp}: a folder, {file}: a plain file).
@pytest.mark.parametrize("args, match", [
    (["--scales", "1:2:inf"], "--scales: COUNT must be an integer"),
    (["--scales", "1:2:nan"], "--scales: COUNT"),
    (["--scales", "1:2:1e9"], "--scales: COUNT"),
    (["--scales", "0:2:4"], "--scales: weight scales must be finite and > 0"),
    (["--scales", "1:inf:4"], "--scales: weight scales must be finite"),
    (["--scales", "-1:2:4"], "--scales: weight scales must be finite and > 0"),
    (["--key", "99999999999999999999999"], "--key: expected an integer in"),
    (["--key", "-1"], "--key"),
    (["--dtype", "float8"], "'float16', 'bfloat16', 'float32', 'float64'"),
    (["--batchnorm"], "--batchnorm applies to mlp only, not rnn"),
    (["--residual"], "--residual applies to mlp only, not rnn"),
    (["--batch", "4"], "--batch applies to mlp only"),
    (["--forget-bias", "1"], "--forget-bias applies to lstm only"),
    (["--out", "{file}/map.npz"], "--out"),
    (["--out", "{tmp}"], "--out"),
    (["--plot", "{tmp}/map.bmp"], "--plot must end in one of"),
    (["--plot", "{tmp}/map"], "--plot must end in one of"),
    (["--plot", "{file}/sub/map.png"], "--plot"),
    (["--cache-dir", "{file}"], "--cache-dir"),
    (["--cache-dir", "{file}/sub"], "--cache-dir"),
])
def test_bad_sweep_arguments_exit_2_before_computing(
    args, match, tmp_path, capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(ex, "sweep", _no_sweep)
  (tmp_path / "file").write_text("not a folder")
  args = [a.format(tmp=tmp_path, file=tmp_path / "file") for a in args]
  code = _main_code(cli, ["sweep", "rnn", "--length", "4", *args])
  assert code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and match in lines[0], lines


def test_lstm_rejects_activation(capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(ex, "sweep", _no_sweep)
  assert _main_code(cli, ["sweep", "lstm", "--activation", "relu"]) == 2
  assert capsys.readouterr().err.strip() == (
      "exploding sweep: error: --activation applies to rnn and mlp only, "
      "not lstm")


def test_unwritable_folder_exits_2_before_computing(tmp_path, capsys,
                                                    monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(ex, "sweep", _no_sweep)
  if os.geteuid() != 0:       # root writes through permission bits
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
  elif os.path.isdir("/proc"):   # not writable even for root
    folder = "/proc"
  else:
    pytest.skip("no folder this user cannot write")
  for flag, path in [("--out", f"{folder}/sub/map.npz"),
                     ("--plot", f"{folder}/map.png"),
                     ("--cache-dir", f"{folder}/cache")]:
    assert _main_code(cli, ["sweep", "rnn", flag, path]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "cannot write" in \
        lines[0], lines


def test_negative_looking_values_are_values(monkeypatch):
  from exploding import cli
  parser = cli._parser()
  args = parser.parse_args(cli._join_negative_values(
      ["sweep", "lstm", "--forget-bias", "-.5", "--bias-scale", "-0"]))
  assert args.forget_bias == -0.5 and args.bias_scale == 0.0


def test_version(capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert _main_code(cli, ["--version"]) == 0
  assert capsys.readouterr().out.strip() == f"exploding {ex.__version__}"


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(ex, "sweep", interrupted)
  assert _main_code(cli, ["sweep", "rnn", "--length", "4"]) == 130
  assert capsys.readouterr().err.strip() == "exploding: interrupted"


def test_figure_runner_is_never_read_from_the_working_directory(
    tmp_path, capsys, monkeypatch):
  """A planted ./experiments/reproduce.py must not run: the runner is the
  package's source checkout's, or the one named by --runner."""
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  planted = tmp_path / "experiments"
  planted.mkdir()
  marker = tmp_path / "ran"
  (planted / "reproduce.py").write_text(
      f"open({str(marker)!r}, 'w').close()\n"
      "def main(argv):\n  print('planted', argv)\n  return 0\n")
  monkeypatch.chdir(tmp_path)
  assert cli.main(["list"]) == 0
  assert not marker.exists()
  assert capsys.readouterr().out.startswith("fig01")
  # An explicit --runner is the user's choice, and gets the other flags.
  assert cli.main(["list", "--runner", str(planted / "reproduce.py"),
                   "--quick"]) == 0
  assert marker.exists()
  assert capsys.readouterr().out.strip() == "planted ['--list', '--quick']"
  assert _main_code(cli, ["list", "--runner", str(tmp_path / "no.py")]) == 2
  assert _main_code(cli, ["reproduce", "--runner"]) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 2 and all("--runner" in line for line in lines)


def test_runner_argument_errors_are_one_line(capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert _main_code(cli, ["reproduce", "--bogus"]) == 2
  assert capsys.readouterr().err.strip() == (
      "exploding reproduce: error: unrecognized arguments: --bogus")


def test_list_into_a_closed_pipe_exits_quietly(tmp_path):
  proc = subprocess.Popen([sys.executable, "-m", "exploding.cli", "list"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=tmp_path)
  proc.stdout.close()    # `exploding list | head -0`: the reader is gone
  err = proc.stderr.read().decode()
  proc.stderr.close()
  assert proc.wait(timeout=300) == 141
  assert "Traceback" not in err and "BrokenPipe" not in err, err


def _no_sweep(*args, **kwargs):
  raise AssertionError("the sweep ran before the arguments were checked")


def _main_code(cli, argv):
  try:
    return cli.main(argv)
  except SystemExit as e:
    return e.code


_FAKE_FIGURE = '''"""A fake figure whose compute and plot advance a fake clock."""
import time
QUICK = FULL = {"n": 3}

def compute(config):
  time.advance(3.0)
  return {"x": list(range(config["n"]))}

def plot(results):
  import matplotlib.figure
  time.advance(5.0)
  fig = matplotlib.figure.Figure(figsize=(1, 1))
  fig.add_subplot().plot(results["x"])
  return fig
'''


def test_reproduce_ends_with_a_table_and_where_things_live(
    tmp_path, capsys, monkeypatch):
  """The summary gives compute and plot seconds apart (a fake clock: compute
  takes 3 s, plot 5 s), computed then cached, and the folders in use."""
  import time
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  now = [1000.0]
  monkeypatch.setattr(time, "perf_counter", lambda: now[0])
  monkeypatch.setattr(time, "advance",
                      lambda s: now.__setitem__(0, now[0] + s), raising=False)
  experiments = tmp_path / "experiments"
  experiments.mkdir()
  runner = experiments / "reproduce.py"
  runner.write_text((_ROOT / "experiments" / "reproduce.py").read_text())
  (experiments / "fig01_fake.py").write_text(_FAKE_FIGURE)
  out, cache = tmp_path / "out", tmp_path / "cache"
  args = ["reproduce", "--runner", str(runner), "--out", str(out),
          "--cache-dir", str(cache), "--format", "png"]
  for status, compute in [("computed", 3.0), ("cached", 0.0)]:
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(l for l in lines if l.startswith("figure ")))
    assert lines[header].split() == ["figure", "status", "compute", "s",
                                     "plot", "s"]
    assert lines[header + 1].split() == ["fig01_fake", status,
                                         f"{compute:.2f}", "5.00"]
    total = lines[header + 2].split()
    assert total[:3] == ["total", f"{compute:.2f}", "5.00"]
    assert f"1 {status}" in lines[header + 2]
    rest = "\n".join(lines[header + 3:])
    assert f"figures:  {out} (png)" in rest
    assert f"results:  {cache}" in rest
    assert "compiled: " in rest
    assert (out / "fig01_fake.png").stat().st_size > 1000
  assert cli.main([*args, "--no-cache"]) == 0
  assert "results:  not cached (--no-cache)" in capsys.readouterr().out


def test_help_is_plain_text(capsys, monkeypatch):
  from exploding import cli
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert _main_code(cli, ["--help"]) == 0
  out = capsys.readouterr().out
  assert "The exploding command: sweep, reproduce, list." in out
  assert "``" not in out
