"""Fresh processes for runs that need one: a device count set by
``XLA_FLAGS`` before jax starts, other XLA flags, a clean peak RSS, or
another ``exploding`` on ``PYTHONPATH`` (the 0.1 sweep).

Two ways in. ``run_task(task)`` runs ``python _worker.py '<json task>'`` and
returns the one JSON result. ``Session`` keeps a worker alive that holds
named thunks (``setup``: build, warm up, save the map) and times one call
of any of them on request, so runs in several processes are interleaved
repetition by repetition and share the box's load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


# ---------------------------------------------------------- parent side


def _env(xla_flags=None, env_vars=None):
  env = dict(os.environ, **(env_vars or {}))
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  return env


def run_task(task, xla_flags=None, timeout=600, env_vars=None):
  """Runs one task in a fresh process; returns its result dict."""
  p = subprocess.run([sys.executable, os.path.join(HERE, "_worker.py"),
                      json.dumps(task)], capture_output=True, text=True,
                     env=_env(xla_flags, env_vars), timeout=timeout)
  for line in p.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[7:])
  raise RuntimeError(f"worker failed ({p.returncode}): {p.stderr[-2000:]}")


class Session:
  """A live worker process answering requests on stdin, one at a time."""

  def __init__(self, xla_flags=None, env_vars=None):
    self._err = tempfile.TemporaryFile(mode="w+")   # a full pipe would block
    self._p = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "_worker.py"), "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
        text=True, env=_env(xla_flags, env_vars))
    self.info = self.ask(op="info")

  def ask(self, **request):
    self._p.stdin.write(json.dumps(request) + "\n")
    self._p.stdin.flush()
    for line in self._p.stdout:
      if line.startswith("RESULT "):
        out = json.loads(line[7:])
        if "error" in out:
          raise RuntimeError(f"worker: {out['error']}")
        return out
    self._err.seek(0)
    raise RuntimeError(f"worker died: {self._err.read()[-2000:]}")

  def close(self):
    if self._p.poll() is None:
      self._p.stdin.write(json.dumps({"op": "quit"}) + "\n")
      self._p.stdin.close()
      self._p.wait(timeout=60)
    self._err.close()


# ---------------------------------------------------------- worker side


def _thunk(v):
  """``(fn, to_map)`` for a variant spec: ``fn()`` runs it once,
  ``to_map(fn())`` is its log_growth as ``(n_scales, T, seeds)``.

  kinds: ``sweep`` (``ex.sweep(model, **settings)``; the only kind the 0.1
  package runs), ``generic`` (the RNN without its fused advance), ``O2``
  (the sweep at XLA's default optimisation level), ``plain`` and
  ``plain_sharded`` (the plain program, its draws sharded over the seeds
  axis of every device).
  """
  import numpy as np
  import exploding as ex
  kind, model, settings = v["kind"], v["model"], v["settings"]
  gs = np.linspace(0.5, 2, v["n_scales"])
  kw = dict(weight_scales=gs, length=v["length"], seeds=v["seeds"],
            progress=False)
  sweep_map = lambda m: m.log_growth
  if kind == "sweep":
    return (lambda: ex.sweep(model, **settings, **kw)), sweep_map
  import _baselines
  import _levers
  if kind == "generic":
    m = _levers.generic_rnn(settings["hidden"])
    return (lambda: ex.sweep(m, **kw)), sweep_map
  if kind == "O2":
    return _levers.sweep_with_compiler_options(None, model, **settings,
                                               **kw), sweep_map
  if kind in ("plain", "plain_sharded"):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    if model == "mlp":
      built = ex.mlp.model(settings["width"], v["length"],
                           batch=settings["batch"])
    else:
      built = {"rnn": ex.rnn.model, "lstm": ex.lstm.model}[model](
          settings["hidden"])
    draws = _baselines.seed_draws(built, v["seeds"])
    sharding = None
    if kind == "plain_sharded":
      mesh = Mesh(np.array(jax.devices()), ("seeds",))
      sharding = NamedSharding(mesh, P("seeds"))
    return (_baselines.plain_thunk(model, draws, gs, v["length"], sharding),
            lambda out: _baselines.map_layout(out[0]))
  raise ValueError(kind)


def _serve():
  import numpy as np
  import jax
  import exploding as ex
  import _timing
  thunks = {}
  for line in sys.stdin:
    req = json.loads(line)
    op = req["op"]
    try:
      if op == "quit":
        break
      if op == "info":
        out = dict(devices=jax.device_count(), exploding=ex.__file__,
                   version=ex.__version__)
      elif op == "setup":
        fn, to_map = _thunk(req["variant"])
        thunks[req["name"]] = fn
        res = {}
        out = _timing.first_call(lambda: res.__setitem__("out", fn()))
        out.pop("compiled")
        if req.get("save"):
          np.save(req["save"], to_map(res["out"]))
      elif op == "time":
        fn = thunks[req["name"]]
        t0 = time.perf_counter()
        _timing.block(fn())
        out = {"s": time.perf_counter() - t0}
      else:
        raise ValueError(op)
    except Exception as e:  # reported to the parent, which raises
      out = {"error": f"{type(e).__name__}: {e}"}
    print("RESULT " + json.dumps(out), flush=True)


def main(task):
  import numpy as np
  import _timing
  import jax
  import exploding as ex
  kind = task["kind"]
  if kind == "sweep":
    res = {"devices": jax.device_count()}
    for H in task["hidden"]:
      kw = dict(weight_scales=np.linspace(0.5, 2, task["n_scales"]),
                length=task["length"], seeds=task["seeds"], hidden=H,
                progress=False)
      out = {}
      r = _timing.first_and_median(
          lambda: out.__setitem__("m", ex.sweep("rnn", **kw)),
          repeats=task["repeats"], max_s=task.get("max_s"))
      r.pop("compiled")
      if task.get("save"):
        np.save(task["save"].format(H=H), out["m"].log_growth)
      res[str(H)] = r
    return res
  if kind == "memory":
    # VmHWM, not ru_maxrss: after fork+exec ru_maxrss still carries the
    # parent's peak, VmHWM is this image's own.
    before = _timing.current_rss_mib()
    peak_before = _timing.hwm_rss_mib()
    run = lambda: ex.sweep(
        "rnn", weight_scales=np.linspace(0.5, 2, task["n_scales"]),
        length=task["length"], seeds=task["seeds"], hidden=task["hidden"],
        method=task["method"], progress=False)
    m = run()
    peak = _timing.hwm_rss_mib()
    # Second, compiled run: reset the high-water mark first (Linux
    # clear_refs 5) so VmHWM is the run's own peak, not the compiler's.
    settled = _timing.current_rss_mib()
    run_peak = float("nan")
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
      run()
      run_peak = _timing.hwm_rss_mib()
    except OSError:
      pass
    return dict(rss_before_mib=before, peak_before_mib=peak_before,
                peak_mib=peak, settled_mib=settled, run_peak_mib=run_peak,
                finite=bool(np.isfinite(m.log_growth).any()))
  raise ValueError(kind)


if __name__ == "__main__":
  if sys.argv[1:] == ["--serve"]:
    _serve()
  else:
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))))
