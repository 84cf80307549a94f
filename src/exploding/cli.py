"""The ``exploding`` command: ``sweep``, ``reproduce``, ``list``.

``exploding sweep rnn --activation tanh --scales 0.5:2.0:64 --length 512
--seeds 8 --hidden 128 --out map.npz --plot map.png`` measures a gradient map
and draws it. ``exploding reproduce [--quick] [--only fig04]`` regenerates the
paper's figures; ``exploding list`` lists them.

XLA on CPU runs a sweep's GEMMs on about one core; the command exposes one
host device per core (``--xla_force_host_platform_device_count``) when the
user has not set ``XLA_FLAGS``, and the sweep shards over them. It also
turns on jax's persistent compilation cache (``~/.cache/exploding/xla``;
``EXPLODING_NO_XLA_CACHE=1`` opts out), so a rerun compiles nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
  """Bad arguments: one line on stderr, exit code 2, no traceback."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def _scales(text: str):
  import numpy as np
  try:
    parts = [float(p) for p in text.split(":")]
    if len(parts) == 3 and parts[2] == int(parts[2]) and parts[2] >= 1:
      return np.linspace(parts[0], parts[1], int(parts[2]))
    if len(parts) == 1:
      return np.array(parts)
  except ValueError:
    pass
  raise argparse.ArgumentTypeError(
      f"expected START:STOP:COUNT or one scale, got {text!r}")


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="exploding", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True,
                              parser_class=_Parser)
  s = sub.add_parser("sweep", help="measure a gradient map",
                     description="Measure log-space Jacobian-product growth "
                     "over weight scale x length x seed.")
  s.add_argument("model", choices=["rnn", "lstm", "mlp"])
  s.add_argument("--scales", type=_scales, default="0.5:2.0:32",
                 help="weight scales START:STOP:COUNT (default 0.5:2.0:32)")
  s.add_argument("--length", type=int, default=256,
                 help="steps T (depth for mlp; default 256)")
  s.add_argument("--seeds", type=int, default=8, help="seeds (default 8)")
  s.add_argument("--hidden", type=int, default=128,
                 help="state size, or width for mlp (default 128)")
  s.add_argument("--activation", default="tanh",
                 help="tanh, relu, sigmoid, linear, hard_tanh, erf")
  s.add_argument("--bias-scale", type=float, default=0.0, help="sigma_b")
  s.add_argument("--init", default="gaussian",
                 help="gaussian, orthogonal or identity")
  s.add_argument("--method", default="jvp", help="jvp, vjp or lyapunov")
  s.add_argument("--key", type=int, default=0, help="PRNG seed (default 0)")
  s.add_argument("--dtype", default=None, help="float16, bfloat16, float32, "
                 "float64 (default float32)")
  s.add_argument("--forget-bias", type=float, default=None, help="lstm only")
  s.add_argument("--input-size", type=int, default=None,
                 help="rnn/lstm input dimension (zero input)")
  s.add_argument("--batch", type=int, default=None, help="mlp batch size")
  s.add_argument("--batchnorm", action="store_true", help="mlp batch norm")
  s.add_argument("--residual", action="store_true", help="mlp residual")
  s.add_argument("--chunk-size", type=int, default=None,
                 help="grid points per compiled call")
  s.add_argument("--cache-dir", default=None,
                 help="cache finished chunks here (resumable)")
  s.add_argument("--out", default=None, help="write the map (.npz)")
  s.add_argument("--plot", default=None, help="draw the map (.png/.pdf)")
  s.add_argument("--no-progress", action="store_true",
                 help="hide the progress bar")
  sub.add_parser("reproduce", help="regenerate the paper's figures "
                 "(exploding reproduce --help for its flags)")
  sub.add_parser("list", help="list the figures")
  return parser


def main(argv=None) -> int:
  """Entry point of the ``exploding`` command; returns the exit code."""
  os.environ.setdefault(
      "XLA_FLAGS",
      f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")
  from exploding import _env
  _env.use_compilation_cache()
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in ("reproduce", "list"):
    # The figure runner parses its own flags (--quick, --only, --no-cache).
    runner = _reproduce_module()
    if runner is None:
      print("exploding: error: experiments/reproduce.py not found; run from "
            "the repository root", file=sys.stderr)
      return 2
    rest = argv[1:] if argv[0] == "reproduce" else ["--list", *argv[1:]]
    return runner.main(rest)
  return _sweep(_parser().parse_args(argv))


def _sweep(args) -> int:
  import exploding as ex
  kwargs = {}
  for name in ("forget_bias", "input_size", "batch"):
    if getattr(args, name) is not None:
      kwargs[name] = getattr(args, name)
  if args.model == "mlp":
    kwargs.update(batchnorm=args.batchnorm, residual=args.residual)
  try:
    m = ex.sweep(args.model, weight_scales=args.scales, length=args.length,
                 seeds=args.seeds, hidden=args.hidden,
                 activation=args.activation, bias_scale=args.bias_scale,
                 init=args.init, method=args.method, key=args.key,
                 dtype=args.dtype, chunk_size=args.chunk_size,
                 cache_dir=args.cache_dir, progress=not args.no_progress,
                 **kwargs)
  except (ValueError, TypeError) as e:
    print(f"exploding sweep: error: {e}", file=sys.stderr)
    return 2
  crit = m.critical_scale()
  print(f"{m!r}: critical scale {crit:.4g}")
  if args.out:
    m.save(args.out)
    print(f"wrote {args.out}")
  if args.plot:
    from exploding import plotting
    fig = plotting.plot_growth_map(m)
    fig.savefig(args.plot, dpi=150, bbox_inches="tight")
    print(f"wrote {args.plot}")
  return 0


def _reproduce_module():
  """experiments/reproduce.py from the working directory or the source
  checkout this package is installed from (editable install)."""
  here = pathlib.Path(__file__).resolve()
  for root in (pathlib.Path.cwd(), here.parents[2]):
    path = root / "experiments" / "reproduce.py"
    if path.exists():
      spec = importlib.util.spec_from_file_location("_exploding_reproduce",
                                                    path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module
  return None


if __name__ == "__main__":
  sys.exit(main())
