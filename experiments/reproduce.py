"""Regenerates the paper's figures: ``python experiments/reproduce.py [--quick]``.

Every ``fig*.py`` next to this file is a figure. Each has ``compute(config)``
returning a dict of numpy arrays, ``plot(results)`` returning a matplotlib
``Figure``, and two configs, ``QUICK`` and ``FULL``. For each figure (in
sorted order) the runner

1. loads the results from ``.cache/figures/`` at the repository root, or
   computes and stores them there. The cache key hashes the figure's name,
   its config, the module's optional ``CACHE_VERSION`` (bump it when
   ``compute`` changes) and the versions of ``exploding`` and ``jax``.
   Files are written to a temporary name and moved into place; a file that
   cannot be read is recomputed.
2. plots them in the paper style and writes ``figNN_name.png`` and ``.pdf``
   to ``--out`` (default ``figures/`` at the repository root).
3. prints one line: the name, ``cached`` or ``computed``, and the seconds
   spent computing (or loading the cache) and plotting, apart.

At the end it prints a table of every figure (status, compute and plot
seconds, totals) and where the figures, the cached results and jax's
compiled programs live.

``exploding reproduce`` and ``exploding list`` call :func:`main` here.

Examples:
  python experiments/reproduce.py --quick           # all figures, small configs
  python experiments/reproduce.py --only fig01,fig03
  python experiments/reproduce.py --list
"""

from __future__ import annotations

import os

# Sweeps shard their grid over host devices, one per core; XLA reads this
# flag once, when jax initialises, so it must be set before jax is imported.
# A user's own XLA_FLAGS win.
if "XLA_FLAGS" not in os.environ:
  os.environ["XLA_FLAGS"] = (
      f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")
# numpy's threaded BLAS stalls while XLA's host devices hold every core
# (fig04's 16 eigensolves: 0.07 s on one thread, up to 12 s threaded).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402
import zipfile  # noqa: E402
from typing import Sequence  # noqa: E402

import numpy as np  # noqa: E402

EXPERIMENTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(EXPERIMENTS_DIR)
DEFAULT_OUT = os.path.join(REPO_ROOT, "figures")
DEFAULT_CACHE = os.path.join(REPO_ROOT, ".cache", "figures")
# Quick figures go aside: figures/ holds the FULL versions (the paper's).
DEFAULT_QUICK_OUT = os.path.join(REPO_ROOT, ".cache", "figures-quick")


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the figure pipeline; the command-line entry point.

  Args:
    argv: arguments without the program name; ``None`` reads ``sys.argv``.

  Returns:
    The exit status: 0 on success, 1 if a figure failed (the others still
    run), 2 for a bad ``--only``.
  """
  args = _parse_args(argv)
  from exploding import _env
  _env.use_compilation_cache()   # a rerun reuses compiled programs
  figures = discover_figures()
  if args.only:
    prefixes = [p for item in args.only for p in item.split(",") if p]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in figures)]
    if unknown:
      print(f"--only: no figure matches {', '.join(unknown)}; "
            f"figures are: {', '.join(figures) or '(none)'}", file=sys.stderr)
      return 2
    figures = {n: p for n, p in figures.items()
               if any(n.startswith(q) for q in prefixes)}
  if args.list:
    for name, path in figures.items():
      print(f"{name:<34s} {_summary(path)}")
    return 0

  import matplotlib
  matplotlib.use("Agg")
  out = os.path.abspath(args.out)
  cache_dir = None if args.no_cache else os.path.abspath(args.cache_dir)
  mode = "quick" if args.quick else "full"
  # Quick runs are smoke tests: PNG only unless asked (PDF is the paper's).
  formats = [f for item in args.format for f in item.split(",") if f] or (
      ["png"] if args.quick else ["png", "pdf"])
  print(f"{len(figures)} figure(s), {mode} configs -> {out}", flush=True)
  failed, rows = [], []
  for name, path in figures.items():
    try:
      status, seconds, plot_seconds = run_figure(
          name, path, quick=args.quick, out_dir=out, cache_dir=cache_dir,
          formats=formats)
    except Exception:  # one broken figure must not stop the rest
      traceback.print_exc()
      print(f"{name:<34s} FAILED", flush=True)
      failed.append(name)
      rows.append((name, "FAILED", None, None))
      continue
    # run_figure's seconds include the plot: report the two apart
    rows.append((name, status, seconds - plot_seconds, plot_seconds))
    print(f"{name:<34s} {status:<8s} {seconds - plot_seconds:7.2f} s"
          f" + plot {plot_seconds:6.2f} s", flush=True)
  _print_summary(rows, out=out, formats=formats, cache_dir=cache_dir)
  if failed:
    print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


def _print_summary(rows, *, out: str, formats: Sequence[str],
                   cache_dir: str | None) -> None:
  """The closing table: each figure's status, compute (or cache load) and
  plot seconds, the totals, and where results and caches live."""
  import jax

  print(f"\n{'figure':<34s} {'status':<8s} {'compute s':>9s} {'plot s':>7s}")
  for name, status, compute, plot in rows:
    times = ("" if compute is None
             else f" {compute:9.2f} {plot:7.2f}")
    print(f"{name:<34s} {status:<8s}{times}")
  done = [r for r in rows if r[2] is not None]
  counts = ", ".join(f"{sum(r[1] == s for r in rows)} {s}"
                     for s in ("computed", "cached", "FAILED")
                     if any(r[1] == s for r in rows))
  print(f"{'total':<34s} {'':<8s} {sum(r[2] for r in done):9.2f} "
        f"{sum(r[3] for r in done):7.2f}   ({counts or 'no figures'})")
  print(f"figures:  {out} ({', '.join(formats)})")
  print("results:  " + (f"{cache_dir} (one .npz per figure and config)"
                        if cache_dir else "not cached (--no-cache)"))
  xla = jax.config.jax_compilation_cache_dir
  print("compiled: " + (f"{xla} (jax persistent compilation cache)"
                        if xla else "no persistent compilation cache"),
        flush=True)


def discover_figures(directory: str = EXPERIMENTS_DIR) -> dict[str, str]:
  """Finds the figure scripts.

  Args:
    directory: where to look.

  Returns:
    ``{name: path}`` for every ``fig*.py`` in ``directory``, sorted by name
    (``fig01_repeated_multiplication``, ...).
  """
  names = sorted(f for f in os.listdir(directory)
                 if f.startswith("fig") and f.endswith(".py"))
  return {f[:-3]: os.path.join(directory, f) for f in names}


def load_figure(path: str) -> types.ModuleType:
  """Imports a figure script by path (``experiments/`` is not a package)."""
  name = os.path.splitext(os.path.basename(path))[0]
  module_name = f"_exploding_experiments_{name}"
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module  # dataclasses look their module up here
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[module_name]
    raise
  return module


def run_figure(
    name: str,
    path: str,
    *,
    quick: bool = False,
    out_dir: str = DEFAULT_OUT,
    cache_dir: str | None = DEFAULT_CACHE,
    formats: Sequence[str] = ("png", "pdf"),
) -> tuple[str, float, float]:
  """Computes (or loads) one figure's results, plots and saves it.

  Args:
    name: the figure's name, e.g. ``"fig01_repeated_multiplication"``.
    path: its script.
    quick: use ``QUICK`` instead of ``FULL``.
    out_dir: where ``name.png`` and ``name.pdf`` go.
    cache_dir: the results cache; ``None`` always computes and stores nothing.
    formats: the file types to write.

  Returns:
    ``(status, seconds, plot_seconds)``: ``status`` is ``"cached"`` or
    ``"computed"``, ``seconds`` the whole figure's wall time and
    ``plot_seconds`` the part spent plotting and saving.
  """
  from exploding import plotting

  start = time.perf_counter()
  module = load_figure(path)
  config = module.QUICK if quick else module.FULL
  results, status = None, "computed"
  cache_path = None
  if cache_dir is not None:
    cache_path = os.path.join(
        cache_dir, f"{name}-{cache_key(name, config, module)}.npz")
    results = _load_results(cache_path)
    if results is not None:
      status = "cached"
  if results is None:
    results = as_arrays(module.compute(config))
    if cache_path is not None:
      _save_results(cache_path, results)
  plot_start = time.perf_counter()
  with plotting.paper_style():
    fig = module.plot(results)
    plotting.save_figure(fig, os.path.join(out_dir, name), formats=formats)
  end = time.perf_counter()
  return status, end - start, end - plot_start


def cache_key(name: str, config: dict, module: types.ModuleType | None = None
              ) -> str:
  """Hashes what a figure's results depend on.

  Args:
    name: the figure's name.
    config: its config dict (JSON-serialisable; other values use ``repr``).
    module: the figure module, for its optional ``CACHE_VERSION``.

  Returns:
    16 hex digits of a SHA-256 over name, config, ``CACHE_VERSION`` and the
    versions of ``exploding`` and ``jax``.
  """
  import jax
  import exploding

  payload = json.dumps({
      "figure": name,
      "config": config,
      "cache_version": getattr(module, "CACHE_VERSION", 0),
      "exploding": exploding.__version__,
      "jax": jax.__version__,
  }, sort_keys=True, default=repr)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def as_arrays(results: dict) -> dict[str, np.ndarray]:
  """Converts a ``compute`` result to ``{str: numpy array}``, as cached.

  Raises:
    TypeError: if ``results`` is not a dict, or a value is not numeric or
      string data (object arrays cannot be cached without pickle).
  """
  if not isinstance(results, dict):
    raise TypeError(f"compute must return a dict, got {type(results).__name__}")
  arrays = {}
  for key, value in results.items():
    array = np.asarray(value)
    if array.dtype == object:
      raise TypeError(f"result {key!r} is an object array; return numbers")
    arrays[str(key)] = array
  return arrays


def _load_results(path: str) -> dict[str, np.ndarray] | None:
  """Reads a cached result; ``None`` if absent or unreadable."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as data:
      return {key: data[key] for key in data.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    print(f"cache: unreadable {os.path.basename(path)} ({e}); recomputing",
          file=sys.stderr)
    return None


def _save_results(path: str, results: dict[str, np.ndarray]) -> None:
  """Writes ``results`` to ``path`` atomically (temporary file + replace)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **results)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _summary(path: str) -> str:
  """The first line of a script's docstring, read without importing it."""
  import ast

  with open(path, encoding="utf-8") as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  return doc.strip().splitlines()[0] if doc.strip() else ""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="reproduce",
      description="Regenerate the paper's figures (cached computation).")
  parser.add_argument("--quick", action="store_true",
                      help="small configs: seconds per figure")
  parser.add_argument("--only", action="append", default=[], metavar="PREFIX",
                      help="figures whose name starts with PREFIX "
                           "(repeatable or comma-separated), e.g. fig04")
  parser.add_argument("--list", action="store_true",
                      help="list the figures and exit")
  parser.add_argument("--no-cache", action="store_true",
                      help="always compute; neither read nor write the cache")
  parser.add_argument("--out", default=None,
                      help="output directory (default: figures/ at the repo "
                           "root; with --quick, .cache/figures-quick/)")
  parser.add_argument("--format", action="append", default=[],
                      metavar="EXT", help="file types to write (repeatable or "
                      "comma-separated; default: png,pdf; png with --quick)")
  parser.add_argument("--cache-dir", default=DEFAULT_CACHE,
                      help="results cache (default: .cache/figures/ at the "
                           "repo root)")
  args = parser.parse_args(argv)
  if args.out is None:
    args.out = DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT
  return args


def run_script(path: str, argv: Sequence[str] | None = None) -> int:
  """Entry point of a figure script: runs the pipeline for that figure only.

  Args:
    path: the script's ``__file__``.
    argv: its arguments (``--quick``, ``--no-cache``, ``--out``); ``None``
      reads ``sys.argv``.
  """
  if argv is None:
    argv = sys.argv[1:]
  name = os.path.splitext(os.path.basename(path))[0]
  return main(["--only", name, *argv])


if __name__ == "__main__":
  sys.exit(main())
