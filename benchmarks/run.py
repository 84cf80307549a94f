"""Regenerates benchmarks/RESULTS.md: speed, roofline, memory and scaling of
``ex.sweep`` against baselines (issue 7).

    python benchmarks/run.py            # full run, < 10 min on 2 cores
    python benchmarks/run.py --quick    # ~1-2 min smoke run, small sizes

Timings are medians over repeats after a warm-up call, compile time is
reported apart (JAX monitoring events), every comparison is measured in the
same run. Runs that need another device count, other XLA flags or a clean
peak RSS use fresh subprocesses (``_worker.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import exploding as ex  # noqa: E402

import _baselines  # noqa: E402
import _levers  # noqa: E402
import _timing  # noqa: E402

T0 = time.perf_counter()


def log(msg):
  print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr,
        flush=True)


def flops_per_step(H):
  """Forward + tangent per grid point per step: two H x H matvecs (4 H^2)
  plus ~12 H elementwise (tanh, its derivative, scale, norms)."""
  return 4 * H * H + 12 * H


def workload_flops(H, n_points, T):
  return flops_per_step(H) * n_points * T


# ------------------------------------------------------------ environment


def environment():
  cpu = "?"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  try:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  except (ValueError, OSError):
    mem = float("nan")
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                            capture_output=True, text=True).stdout.strip()
  except OSError:
    commit = "?"
  import jaxlib
  torch_v = "not installed"
  if _baselines.torch_available():
    import torch
    torch_v = torch.__version__
  return dict(date=datetime.datetime.now().astimezone().isoformat(
      timespec="seconds"), machine=platform.platform(), cpu=cpu,
      cores=os.cpu_count(), mem_gib=round(mem, 1),
      loadavg_start=os.getloadavg(), python=platform.python_version(),
      jax=jax.__version__, jaxlib=jaxlib.__version__, numpy=np.__version__,
      exploding=ex.__version__, torch=torch_v, commit=commit,
      xla_flags=os.environ.get("XLA_FLAGS", ""),
      devices=jax.device_count())


# ----------------------------------------------------------------- pieces


def gemm_peak(n=2048, repeats=7):
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(lambda a, b: a @ b)
  t = _timing.median_time(lambda: mm(a, b), repeats)
  return dict(n=n, median_s=t, gflops=2 * n**3 / t / 1e9)


def gemm_loop(H, seeds, rows, T, repeats=5):
  """XLA's own throughput for the sweep's GEMM shape: a scan of batched
  ``(seeds, rows, H) @ (seeds, H, H)`` matmuls (+tanh, to keep it honest)."""
  W = jax.random.normal(jax.random.key(0), (seeds, H, H)) / np.sqrt(H)
  x = jax.random.normal(jax.random.key(1), (seeds, rows, H))

  @jax.jit
  def loop(W, x):
    body = lambda x, _: (jnp.tanh(jnp.einsum("spi,sji->spj", x, W)), None)
    return jax.lax.scan(body, x, None, length=T)[0]
  t = _timing.median_time(lambda: loop(W, x), repeats)
  return dict(shape=f"{T} x ({seeds}x{rows}x{H} @ {seeds}x{H}x{H})",
              median_s=t, gflops=2 * seeds * rows * H * H * T / t / 1e9)


def sweep_kw(H, n_scales, seeds, T, **extra):
  return dict(weight_scales=np.linspace(0.5, 2, n_scales), length=T,
              seeds=seeds, hidden=H, input_size=H, progress=False, **extra)


def time_sweep(kw, repeats, max_s=None):
  r = _timing.first_and_median(lambda: ex.sweep("rnn", **kw).log_growth,
                               repeats=repeats, max_s=max_s)
  r["n_local_compiles"] = sum("local" in n for n in r["compiled"])
  return r


def worker(task, xla_flags=None, timeout=600, env_vars=None):
  env = dict(os.environ, **(env_vars or {}))
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  p = subprocess.run([sys.executable, os.path.join(HERE, "_worker.py"),
                      json.dumps(task)], capture_output=True, text=True,
                     env=env, timeout=timeout)
  for line in p.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[7:])
  raise RuntimeError(f"worker failed ({p.returncode}): {p.stderr[-2000:]}")


# ------------------------------------------------------------------- main


def _from_json(R):
  """Undo JSON's string keys where the results are keyed by ints (H,
  device count, k, grid size); workers' own results keep str(H) keys."""
  ints = lambda d: {int(k) if k.isdigit() else k: v for k, v in d.items()}
  for k in ("sweep", "roofline", "baselines", "devices", "levers",
            "lyapunov"):
    R[k] = ints(R[k])
  for k in ("scaling", "memory"):
    R[k] = {n: ints(v) if isinstance(v, dict) else v
            for n, v in R[k].items()}
  return R


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="~1-2 min smoke run")
  ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
  ap.add_argument("--json", default=None, help="also dump raw results here")
  ap.add_argument("--render", default=None, metavar="JSON",
                  help="only re-render RESULTS.md from a --json dump")
  args = ap.parse_args(argv)
  if args.render:
    import _report
    with open(args.render) as f:
      text = _report.render(_from_json(json.load(f)), flops_per_step)
    with open(args.out, "w") as f:
      f.write(text)
    log(f"wrote {args.out} from {args.render}")
    return
  q = args.quick
  rng = np.random.default_rng(0)
  R = {"quick": q}

  # the workload W (smaller with --quick)
  W = dict(n_scales=8 if q else 32, seeds=2 if q else 8, T=64 if q else 256)
  HS = (32, 64) if q else (64, 256)
  n_points = W["n_scales"] * W["seeds"]
  R["workload"] = dict(W, hidden=HS, n_points=n_points)
  reps = 3 if q else 5

  R["env"] = environment()
  log(f"env: {R['env']['cpu']}, {R['env']['cores']} cores, load "
      f"{R['env']['loadavg_start']}")
  R["gemm_peak"] = gemm_peak(1024 if q else 2048)
  log(f"GEMM peak {R['gemm_peak']['gflops']:.1f} GFLOP/s")

  # 1. the sweep on W, 1 device, in process; compile accounting
  R["sweep"], R["roofline"], R["baselines"] = {}, {}, {}
  for H in HS:
    kw = sweep_kw(H, W["n_scales"], W["seeds"], W["T"])
    r = time_sweep(kw, reps)
    with _timing.CompileLog() as again:   # new scale values, same config
      ex.sweep("rnn", **dict(kw, weight_scales=kw["weight_scales"] * 1.01))
    r["recompiles_new_scales"] = again.count()
    r["gflops"] = workload_flops(H, n_points, W["T"]) / r["median_s"] / 1e9
    R["sweep"][H] = r
    log(f"sweep H={H}: {r['median_s']:.3f}s, compile {r['compile_s']:.2f}s "
        f"({r['n_compiles']} compiles, {r['n_local_compiles']} sweep "
        f"program), {r['gflops']:.1f} GFLOP/s")

    loop = gemm_loop(H, W["seeds"], W["n_scales"], W["T"])
    loop2 = gemm_loop(H, W["seeds"], 2 * W["n_scales"], W["T"])
    R["roofline"][H] = dict(
        flops=workload_flops(H, n_points, W["T"]), gflops=r["gflops"],
        frac_peak=r["gflops"] / R["gemm_peak"]["gflops"],
        loop=loop, loop_stacked=loop2,
        frac_loop=r["gflops"] / loop["gflops"])

    # 2. baselines
    params = _baselines.seed_params(H, H, W["seeds"])
    gs = kw["weight_scales"]
    b = {}
    b["per_point_jvp"] = _timing.first_and_median(
        _baselines.per_point_jvp_loop(gs, W["T"], params, H),
        repeats=2 if q else 3)
    b["per_point_jvp"].pop("compiled")
    pp = _baselines.jvp_growth_per_point(gs, W["T"], params, H,
                                         2 if q else 3, rng)
    b["jvp_growth_per_point"] = dict(per_point_s=pp,
                                     run_s=pp * n_points)
    b["naive_grad"] = _baselines.naive_grad_subset(
        gs, W["T"], W["seeds"], params, H, n_lengths=3 if q else 6,
        per_length=3 if q else 4, rng=rng)
    log(f"baselines H={H}: per-point jvp loop "
        f"{b['per_point_jvp']['median_s']:.2f}s, naive grad extrapolated "
        f"{b['naive_grad']['run_s']:.1f}s")
    if _baselines.torch_available():
      b["torch"] = _baselines.torch_baselines(
          gs, W["T"], W["seeds"], params, H, rng, n_lengths=3 if q else 6,
          per_length=3 if q else 4, repeats=2,
          try_compile=(not q and H == HS[0]))
      log(f"torch H={H}: batched eager "
          f"{b['torch']['batched_eager']['median_s']:.3f}s")
    else:
      b["torch"] = "skipped: torch not installed"
    R["baselines"][H] = b

  # 3. devices: fresh processes with 1, 2, 4, 8 host devices
  R["devices"] = {}
  counts = (1, 2) if q else (1, 2, 4, 8)
  tmp = tempfile.mkdtemp(prefix="exploding-bench-")
  for n in counts:
    # 4 and 8 devices oversubscribe 2 cores; H=256 there costs minutes
    task = dict(kind="sweep", hidden=list(HS) if n <= 2 else list(HS[:1]),
                n_scales=W["n_scales"],
                seeds=W["seeds"], length=W["T"], repeats=reps,
                max_s=8 if n > 2 else None,
                save=os.path.join(tmp, f"dev{n}_H{{H}}.npy"))
    R["devices"][n] = worker(
        task, f"--xla_force_host_platform_device_count={n}")
    log(f"devices={n}: " + ", ".join(
        f"H={H} {R['devices'][n][str(H)]['median_s']:.3f}s" for H in HS
        if str(H) in R["devices"][n]))
  gs = np.linspace(0.5, 2, W["n_scales"])
  for n in counts:
    for H in HS:
      if str(H) not in R["devices"][n]:
        continue
      a = np.load(os.path.join(tmp, f"dev{n}_H{H}.npy"))
      ref = np.load(os.path.join(tmp, f"dev1_H{H}.npy"))
      d = np.abs(a - ref)
      R["devices"][n][str(H)]["maxdiff"] = float(np.nanmax(d))
      R["devices"][n][str(H)]["maxdiff_ordered"] = float(
          np.nanmax(d[gs <= 1.4]))
      R["devices"][n][str(H)]["nan_mismatch"] = int(
          np.sum(np.isnan(a) != np.isnan(ref)))

  # 4. memory: peak RSS vs T at H=256 (4 scales x 2 seeds), fresh processes
  R["memory"] = {}
  mem_T = (256, 1024) if q else (256, 1024, 4096, 16384)
  for method in ("jvp", "vjp"):
    for T in mem_T:
      R["memory"][f"{method}/{T}"] = worker(dict(
          kind="memory", method=method, length=T, hidden=128 if q else 256,
          n_scales=4, seeds=2))
    log(f"memory {method}: " + ", ".join(
        f"T={T} {R['memory'][f'{method}/{T}']['peak_mib']:.0f} MiB"
        for T in mem_T))

  # 5. scaling (in process, 1 device)
  sc = {}
  Hs = (16, 32, 64) if q else (32, 64, 128, 256, 512, 1024)
  sT = 32 if q else 64
  sc["hidden"] = {}
  for H in Hs:
    r = time_sweep(sweep_kw(H, W["n_scales"], W["seeds"], sT),
                   2 if q else 3, max_s=6)
    r["gflops"] = workload_flops(H, n_points, sT) / r["median_s"] / 1e9
    sc["hidden"][H] = r
  log("scaling H: " + ", ".join(f"{H}:{sc['hidden'][H]['median_s']:.3f}s"
                                for H in Hs))
  sH = HS[0]
  sc["grid"] = {}
  for n in ((2, 8, 32) if q else (4, 16, 64, 256)):
    sc["grid"][n] = time_sweep(sweep_kw(sH, n, W["seeds"], W["T"]),
                               2 if q else 3)
  sc["length"] = {}
  for T in ((32, 128) if q else (64, 256, 1024, 4096)):
    sc["length"][T] = time_sweep(sweep_kw(sH, W["n_scales"], W["seeds"], T),
                                 2 if q else 3)
  log("scaling grid/T done")
  R["scaling"] = sc

  # 6. Lyapunov: time per QR step vs k
  R["lyapunov"] = {}
  lH, lT = (32, 32) if q else (256, 64)
  for k in ((1, 8, 32) if q else (1, 4, 16, 64, 256)):
    kw = sweep_kw(lH, 4, 2, lT, method="lyapunov", k=k)
    r = time_sweep(kw, 2 if q else 3, max_s=10)
    r["per_step_s"] = r["median_s"] / lT
    r["per_point_step_s"] = r["median_s"] / (lT * 8)
    R["lyapunov"][k] = r
  R["lyapunov_cfg"] = dict(hidden=lH, length=lT, points=8)
  log("lyapunov done")

  # 7. levers, side by side with ex.sweep
  R["levers"] = {}
  kd = _levers.key_data(0)
  for H in HS:
    kw = sweep_kw(H, W["n_scales"], W["seeds"], W["T"])
    ref = ex.sweep("rnn", **kw).log_growth
    g32 = jnp.asarray(kw["weight_scales"], jnp.float32)
    cands = {
        "ex.sweep (1 device)": None,
        "generic engine path: vmap of the engine's scan per scale, draws "
        "in the program (ex.sweep before the all-scales RNN path)":
            _levers.engine_program(H, H, W["T"], W["seeds"], 4),
        "all-scales GEMM + plain norm, no Kahan (not applied: exact norms "
        "and compensated sums kept)": _levers.stacked_program(
            H, H, W["T"], W["seeds"], 1, True),
        "ex.sweep at XLA's default backend optimisation level (O2) instead "
        "of O1": "O2",
    }
    out = {}
    for name, prog in cands.items():
      note = ""
      if prog is None:
        fn = lambda: ex.sweep("rnn", **kw).log_growth
      elif prog == "O2":
        fn = _levers.sweep_with_compiler_options(None, "rnn", **kw)
        note = "(sweep + draw programs)"
      else:
        fn = lambda p=prog: p(kd, g32)
      r = _timing.first_and_median(fn, repeats=reps)
      r.pop("compiled")
      r["note"] = note
      val = fn() if prog in (None, "O2") else _levers.as_map_layout(fn())
      ok = kw["weight_scales"] <= 1.4
      r["maxdiff_ordered"] = float(np.nanmax(np.abs(val[ok] - ref[ok])))
      out[name] = r
    R["levers"][H] = out
  log("levers done")
  # a fresh process, twice, with jax's persistent compilation cache (what
  # the CLI and the figure runner turn on): the second reads the programs
  cache = tempfile.mkdtemp(prefix="exploding-xla-cache-")
  task = dict(kind="sweep", hidden=list(HS), n_scales=W["n_scales"],
              seeds=W["seeds"], length=W["T"], repeats=2)
  env = {"JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}
  one = "--xla_force_host_platform_device_count=1"
  R["persistent_cache"] = dict(cold=worker(task, one, env_vars=env),
                               warm=worker(task, one, env_vars=env))
  log("persistent cache done")
  R["xla_flags"] = {}
  for flags in ("--xla_llvm_disable_expensive_passes=true",):
    task = dict(kind="sweep", hidden=list(HS), n_scales=W["n_scales"],
                seeds=W["seeds"], length=W["T"], repeats=reps)
    base = worker(task, "--xla_force_host_platform_device_count=1")
    alt = worker(task, "--xla_force_host_platform_device_count=1 " + flags)
    R["xla_flags"][flags] = dict(base=base, alt=alt)
  log("xla flags done")

  R["env"]["loadavg_end"] = os.getloadavg()
  R["env"]["total_s"] = time.perf_counter() - T0
  import _report
  text = _report.render(R, flops_per_step)
  with open(args.out, "w") as f:
    f.write(text)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(R, f, default=str, indent=1)
  log(f"wrote {args.out}")


if __name__ == "__main__":
  main()
