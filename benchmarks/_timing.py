"""Timing, compile accounting and memory helpers shared by the benchmarks.

Every figure is a median over repeats after a warm-up call; compile time is
read from JAX's own monitoring events (trace, lowering, backend compile), so
it is reported apart from run time.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Callable

import jax
from jax import monitoring

_EVENTS: list[tuple[str, str, float]] = []
_KINDS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/core/compile/backend_compile_duration": "compile"}


def _listener(name, duration, **kw):
  if name in _KINDS:
    _EVENTS.append((_KINDS[name], str(kw.get("fun_name", "?")), duration))


monitoring.register_event_duration_secs_listener(_listener)


class CompileLog:
  """Collects compile events inside a ``with`` block."""

  def __enter__(self):
    self._start = len(_EVENTS)
    return self

  def __exit__(self, *exc):
    self.events = list(_EVENTS[self._start:])
    return False

  def total(self, kind=None, min_s=0.0) -> float:
    return sum(d for k, _, d in self.events
               if (kind is None or k == kind) and d >= min_s)

  def count(self, fun_substr=None) -> int:
    """Backend compilations (optionally only functions containing a name)."""
    return sum(1 for k, n, _ in self.events
               if k == "compile" and (fun_substr is None or fun_substr in n))

  def by_fun(self, fun_substr) -> float:
    """Trace + lowering + backend compile of functions containing a name."""
    return sum(d for _, n, d in self.events if fun_substr in n)

  def names(self):
    return [n for k, n, _ in self.events if k == "compile"]


def block(x: Any) -> Any:
  return jax.block_until_ready(x)


def first_call(fn: Callable[[], Any]) -> dict:
  """Runs ``fn`` once (warm-up: compile + first run); returns its seconds
  and the compile breakdown: trace, lowering and backend compile seconds,
  the backend compilations' names, and trace + lowering + compile of the
  sweep's scan program (``local``) and draw program (``draw``)."""
  gc.collect()
  with CompileLog() as log:
    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
  return dict(first_s=first, compile_s=log.total("compile"),
              trace_s=log.total("trace"), lower_s=log.total("lower"),
              n_compiles=log.count(), compiled=log.names(),
              program_s=log.by_fun("local"), draw_s=log.by_fun("draw"))


def first_and_median(fn: Callable[[], Any], repeats: int = 5,
                     max_s: float | None = None) -> dict:
  """``first_call`` and then ``repeats`` more calls: adds the median,
  minimum and every steady-state time. ``max_s`` stops repeating early
  once the repeats have used that much time (at least 2 repeats run)."""
  out = first_call(fn)
  times = []
  spent = 0.0
  for i in range(repeats):
    t0 = time.perf_counter()
    block(fn())
    dt = time.perf_counter() - t0
    times.append(dt)
    spent += dt
    if max_s is not None and i >= 1 and spent > max_s:
      break
  out.update(median_s=statistics.median(times), min_s=min(times),
             repeats=len(times), times=times)
  return out


def median_time(fn: Callable[[], Any], repeats: int = 5) -> float:
  block(fn())
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    block(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def _status_mib(field: str) -> float:
  """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def current_rss_mib() -> float:
  return _status_mib("VmRSS")


def hwm_rss_mib() -> float:
  """VmHWM: peak RSS since start or since the last clear_refs reset."""
  return _status_mib("VmHWM")
