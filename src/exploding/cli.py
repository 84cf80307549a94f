"""The ``exploding`` command: ``sweep``, ``reproduce``, ``list``.

``exploding sweep rnn --activation tanh --scales 0.5:2.0:64 --length 512
--seeds 8 --hidden 128 --out map.npz --plot map.png`` measures a gradient map
and draws it. ``exploding reproduce [--quick] [--only fig04]`` regenerates the
paper's figures; ``exploding list`` lists them.

Arguments are checked before anything is computed, output paths included: a
bad one exits with status 2 and one line on stderr. Ctrl-C exits with 130,
a closed pipe (``exploding list | head``) quietly with 141.

The figure runner is ``experiments/reproduce.py`` of the source checkout this
package is installed from (``pip install -e``), found next to the package's
own source and never in the working directory, which may hold anyone's
``experiments/``; ``--runner PATH`` names another one.

XLA on CPU runs a sweep's GEMMs on about one core; the command exposes one
host device per core (``--xla_force_host_platform_device_count``) when the
user has not set ``XLA_FLAGS``, and the sweep shards over them. It also
turns on jax's persistent compilation cache (``~/.cache/exploding/xla``;
``EXPLODING_NO_XLA_CACHE=1`` opts out), so a rerun compiles nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import pathlib
import re
import sys

__all__ = ["main"]

_DTYPES = ("float16", "bfloat16", "float32", "float64")
# Flags that only some models take: flag -> models.
_MODEL_FLAGS = {
    "activation": ("rnn", "mlp"),
    "forget_bias": ("lstm",),
    "input_size": ("rnn", "lstm"),
    "batch": ("mlp",),
    "batchnorm": ("mlp",),
    "residual": ("mlp",),
}
_MAX_SCALES = 100_000
_MAX_KEY = 2**63   # jax takes int64 seeds
# A value that argparse would mistake for an option: -1:2:4, -.5, -inf.
_NEGATIVE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


class _UsageError(Exception):
  """A bad argument: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
  """Bad arguments: one line on stderr, exit code 2, no traceback."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def main(argv=None) -> int:
  """Entry point of the ``exploding`` command; returns the exit code.

  Args:
    argv: the arguments without the program name; ``None`` reads
      ``sys.argv``.

  Returns:
    0 on success, 1 if writing a result failed, 2 for a bad argument, 130
    when interrupted (Ctrl-C), 141 when stdout was closed (a pipe reader
    that left), or the figure runner's own status.
  """
  try:
    code = _main(argv)
    sys.stdout.flush()   # a closed pipe fails here, not at interpreter exit
    return code
  except KeyboardInterrupt:
    print("exploding: interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:
    # Send what is still buffered nowhere, so the exit flush cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def _main(argv) -> int:
  os.environ.setdefault(
      "XLA_FLAGS",
      f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")
  from exploding import _env
  _env.use_compilation_cache()
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in ("reproduce", "list"):
    try:
      return _run_figures(argv[0], argv[1:])
    except _UsageError as e:
      print(f"exploding {argv[0]}: error: {_one_line(str(e))}",
            file=sys.stderr)
      return 2
  args = _parser().parse_args(_join_negative_values(argv))
  try:
    return _sweep(args)
  except _UsageError as e:
    print(f"exploding sweep: error: {_one_line(str(e))}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
  from exploding import __version__
  parser = _Parser(prog="exploding",
                   description=__doc__.split("\n")[0].replace("``", ""))
  parser.add_argument("--version", action="version",
                      version=f"exploding {__version__}")
  sub = parser.add_subparsers(dest="command", required=True,
                              parser_class=_Parser)
  s = sub.add_parser("sweep", help="measure a gradient map",
                     description="Measure log-space Jacobian-product growth "
                     "over weight scale x length x seed.")
  s.add_argument("model", choices=["rnn", "lstm", "mlp"])
  s.add_argument("--scales", type=_scales, default="0.5:2.0:32",
                 help="weight scales START:STOP:COUNT or one scale, all > 0 "
                 "(default 0.5:2.0:32)")
  s.add_argument("--length", type=int, default=256,
                 help="steps T (depth for mlp; default 256)")
  s.add_argument("--seeds", type=int, default=8, help="seeds (default 8)")
  s.add_argument("--hidden", type=int, default=128,
                 help="state size, or width for mlp (default 128)")
  s.add_argument("--activation", default=None,
                 help="rnn, mlp: tanh (default), relu, sigmoid, linear, "
                 "hard_tanh, erf")
  s.add_argument("--bias-scale", type=float, default=0.0, help="sigma_b")
  s.add_argument("--init", default="gaussian",
                 help="gaussian (default), orthogonal or identity")
  s.add_argument("--method", default="jvp", help="jvp (default), vjp or "
                 "lyapunov")
  s.add_argument("--key", type=_key, default=0,
                 help="PRNG seed, 0 <= KEY < 2**63 (default 0)")
  s.add_argument("--dtype", default=None, choices=_DTYPES,
                 help="computation dtype (default float32)")
  s.add_argument("--forget-bias", type=float, default=None, help="lstm only")
  s.add_argument("--input-size", type=int, default=None,
                 help="rnn, lstm: input dimension (zero input)")
  s.add_argument("--batch", type=int, default=None,
                 help="mlp only: batch size")
  s.add_argument("--batchnorm", action="store_true",
                 help="mlp only: batch norm")
  s.add_argument("--residual", action="store_true",
                 help="mlp only: residual connections")
  s.add_argument("--chunk-size", type=int, default=None,
                 help="grid points per compiled call")
  s.add_argument("--cache-dir", default=None,
                 help="cache finished chunks in this folder (resumable)")
  s.add_argument("--out", default=None,
                 help="write the map (.npz); folders are created")
  s.add_argument("--plot", default=None,
                 help="draw the map (.png, .pdf, .svg, ...); folders are "
                 "created")
  s.add_argument("--no-progress", action="store_true",
                 help="hide the progress bar")
  runner_help = ("; --runner PATH runs that figure runner instead of the "
                 "source checkout's experiments/reproduce.py")
  sub.add_parser("reproduce", help="regenerate the paper's figures "
                 "(exploding reproduce --help for its flags)" + runner_help)
  sub.add_parser("list", help="list the figures" + runner_help)
  return parser


def _sweep(args) -> int:
  import exploding as ex
  from exploding import _validation
  kwargs = _model_settings(args)
  # Checked now, not after a sweep of minutes: an unwritable output is a
  # bad argument.
  if args.out is not None:
    _check(_validation.check_output_file, "--out", args.out)
  if args.plot is not None:
    _check(_validation.check_output_file, "--plot", args.plot,
           _plot_suffixes())
  if args.cache_dir is not None:
    _check(_validation.check_output_dir, "--cache-dir", args.cache_dir)
  try:
    m = ex.sweep(args.model, weight_scales=args.scales, length=args.length,
                 seeds=args.seeds, hidden=args.hidden,
                 bias_scale=args.bias_scale, init=args.init,
                 method=args.method, key=args.key, dtype=args.dtype,
                 chunk_size=args.chunk_size, cache_dir=args.cache_dir,
                 progress=not args.no_progress, **kwargs)
  except (ValueError, TypeError, OverflowError) as e:
    raise _UsageError(str(e)) from None
  crit = m.critical_scale()
  print(f"{m!r}: critical scale {crit:.4g}")
  try:
    if args.out:
      m.save(args.out)
      print(f"wrote {args.out}")
    if args.plot:
      from exploding import plotting
      fig = plotting.plot_growth_map(m)
      os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
      fig.savefig(args.plot, dpi=150, bbox_inches="tight")
      print(f"wrote {args.plot}")
  except OSError as e:
    print(f"exploding sweep: error: cannot write {e.filename or ''}: "
          f"{e.strerror or e}", file=sys.stderr)
    return 1
  return 0


def _model_settings(args) -> dict:
  """The model-specific settings given; a flag the model does not take is
  a bad argument, not silently dropped."""
  settings = {}
  for name, models in _MODEL_FLAGS.items():
    value = getattr(args, name)
    if value is None or value is False:
      continue
    if args.model not in models:
      flag = "--" + name.replace("_", "-")
      raise _UsageError(f"{flag} applies to {' and '.join(models)} only, "
                        f"not {args.model}")
    settings[name] = value
  if args.model in _MODEL_FLAGS["activation"]:
    settings.setdefault("activation", "tanh")
  return settings


def _check(check, flag: str, *check_args) -> None:
  try:
    check(flag, *check_args)
  except (ValueError, TypeError) as e:
    raise _UsageError(str(e)) from None


def _plot_suffixes() -> list[str]:
  from matplotlib.backend_bases import FigureCanvasBase
  return ["." + ext for ext in FigureCanvasBase.get_supported_filetypes()]


def _scales(text: str):
  import numpy as np
  parts = text.split(":")
  try:
    values = [float(p) for p in parts]
  except ValueError:
    values = None
  if values is None or len(values) not in (1, 3):
    raise argparse.ArgumentTypeError(
        f"expected START:STOP:COUNT or one scale, got {text!r}")
  if len(values) == 3:
    start, stop, count = values
    if not (math.isfinite(count) and count == int(count)
            and 1 <= count <= _MAX_SCALES):
      raise argparse.ArgumentTypeError(
          f"COUNT must be an integer in [1, {_MAX_SCALES}], got {text!r}")
    if math.isfinite(start) and math.isfinite(stop):
      values = np.linspace(start, stop, int(count))
  values = np.asarray(values, float)
  if not np.all(np.isfinite(values)) or np.any(values <= 0):
    raise argparse.ArgumentTypeError(
        f"weight scales must be finite and > 0, got {text!r}")
  return values


def _key(text: str) -> int:
  try:
    key = int(text)
  except ValueError:
    key = None
  if key is None or not 0 <= key < _MAX_KEY:
    raise argparse.ArgumentTypeError(
        f"expected an integer in [0, 2**63), got {text!r}")
  return key


def _join_negative_values(argv: list[str]) -> list[str]:
  """``--scales -1:2:4`` -> ``--scales=-1:2:4``: argparse reads a value that
  starts with '-' and is not a plain number as an option."""
  out = []
  for arg in argv:
    if (out and _NEGATIVE.match(arg) and out[-1].startswith("--")
        and "=" not in out[-1]):
      out[-1] = f"{out[-1]}={arg}"
    else:
      out.append(arg)
  return out


def _one_line(message: str) -> str:
  return " ".join(message.split())


def _run_figures(command: str, rest: list[str]) -> int:
  """``exploding reproduce`` / ``list``: the figure runner parses its own
  flags (``--quick``, ``--only``, ``--no-cache``, ...)."""
  path, rest = _pop_runner(rest)
  runner = _load_runner(path)
  if command == "list":
    rest = ["--list", *rest]
  with _one_line_errors(f"exploding {command}"):
    return runner.main(rest)


def _pop_runner(rest: list[str]) -> tuple[pathlib.Path | None, list[str]]:
  """Takes ``--runner PATH`` (or ``--runner=PATH``) out of ``rest``."""
  path, kept = None, []
  items = iter(rest)
  for item in items:
    if item == "--runner":
      path = next(items, None)
      if path is None:
        raise _UsageError("--runner needs a PATH to a reproduce.py")
    elif item.startswith("--runner="):
      path = item.split("=", 1)[1]
    else:
      kept.append(item)
  return (None if path is None else pathlib.Path(path)), kept


def _load_runner(path: pathlib.Path | None):
  """The runner at ``path``, or the one of the source checkout this package
  lives in: ``<root>/experiments/reproduce.py`` for ``<root>/src/exploding``
  (never the working directory's)."""
  if path is None:
    package = pathlib.Path(__file__).resolve().parent
    root = package.parents[1]
    path = root / "experiments" / "reproduce.py"
    if package != root / "src" / "exploding" or not path.is_file():
      raise _UsageError(
          "the figure runner experiments/reproduce.py ships with the source "
          "checkout (pip install -e), not with this installation at "
          f"{package}; pass --runner PATH/TO/experiments/reproduce.py")
  elif not path.is_file():
    raise _UsageError(f"--runner {str(path)!r} is not a file")
  spec = importlib.util.spec_from_file_location("_exploding_reproduce", path)
  if spec is None or spec.loader is None:
    raise _UsageError(f"--runner {str(path)!r} is not a Python file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, "main", None)):
    raise _UsageError(f"{str(path)!r} has no main(argv) function")
  return module


@contextlib.contextmanager
def _one_line_errors(prog: str):
  """The runner's own argparse errors, as one line under ``prog``."""
  original = argparse.ArgumentParser.error

  def error(self, message):
    self.exit(2, f"{prog}: error: {_one_line(message)}\n")

  argparse.ArgumentParser.error = error
  try:
    yield
  finally:
    argparse.ArgumentParser.error = original


if __name__ == "__main__":
  sys.exit(main())
