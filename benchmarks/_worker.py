"""Subprocess entry for runs that need a fresh process: a device count set
by ``XLA_FLAGS`` before jax starts, other XLA flags, or a clean peak RSS.

Usage: ``python benchmarks/_worker.py '<json task>'``; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


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
                input_size=H, progress=False)
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
        input_size=task["hidden"], method=task["method"], progress=False)
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
  print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))))
