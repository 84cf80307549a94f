"""Regenerates benchmarks/RESULTS.md: speed, roofline, memory and scaling of
``ex.sweep`` against baselines (issues 7 and 12).

    python benchmarks/run.py            # full run, ~8 min on 2 cores
    python benchmarks/run.py --quick    # ~2-3 min smoke run, small sizes

Timings are medians over repeats after a warm-up call, compile time is
reported apart (JAX monitoring events), every comparison is measured in the
same run. The head-to-head rows (``ex.sweep`` fused and generic, the plain
program a researcher writes, the 0.1.0 sweep, LSTM and MLP) run in live
worker processes per device count, repetitions interleaved across variants
and processes (``_worker.Session``). Runs that need another device count,
other XLA flags or a clean peak RSS use fresh subprocesses (``_worker.py``).
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
import _timing  # noqa: E402
import _worker  # noqa: E402

T0 = time.perf_counter()
OLD_COMMIT = "7c43fb2"   # the last 0.1 commit
OLD_SRC = "/tmp/exploding-0.1/src"


def log(msg):
  print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr,
        flush=True)


def flops_per_step(H):
  """RNN forward + tangent per grid point per step: two H x H matvecs
  (4 H^2) plus ~12 H elementwise (tanh, its derivative, scale, norms)."""
  return 4 * H * H + 12 * H


def model_flops_per_step(model, settings):
  """Matmul FLOPs per grid point per step, forward + tangent (elementwise
  work left out): LSTM four H x H gate blocks, MLP a (batch, W) @ (W, W)."""
  if model == "rnn":
    return flops_per_step(settings["hidden"])
  if model == "lstm":
    return 16 * settings["hidden"] ** 2
  return 4 * settings["batch"] * settings["width"] ** 2


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
  torch_v = "not installed in this run"
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
      devices=jax.device_count(), argv=sys.argv[1:])


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
              seeds=seeds, hidden=H, progress=False, **extra)


def time_sweep(kw, repeats, max_s=None):
  r = _timing.first_and_median(lambda: ex.sweep("rnn", **kw).log_growth,
                               repeats=repeats, max_s=max_s)
  r["n_local_compiles"] = sum("local" in n for n in r["compiled"])
  return r


def _ordered_diff(a, b, gs):
  """Max |a - b| where both are finite: ``(all, ordered regime g <= 1.4)``;
  maps are ``(n_scales, T, seeds)``."""
  d = np.abs(a - b)
  d = np.where(np.isfinite(d), d, np.nan)
  with np.errstate(all="ignore"):
    return float(np.nanmax(d)), float(np.nanmax(d[gs <= 1.4]))


# --------------------------------------------------- head-to-head sessions


def head_to_head(n_dev, W, HS, others, reps, old_src, tmp, levers):
  """Times every variant of workload W (and the LSTM/MLP rows in
  ``others``) in live worker processes with ``n_dev`` host devices: one for
  this package, one for the 0.1.0 package at ``old_src`` (or None).
  Returns ``{"info": ..., "groups": {group: {"config", "variants"}}}``;
  a variant holds its warm-up (compile) record, every timing, the median
  and its max abs difference from the group's ``sweep``."""
  flags = f"--xla_force_host_platform_device_count={n_dev}"
  procs = {"new": _worker.Session(flags)}
  if old_src:
    procs["old"] = _worker.Session(flags, {"PYTHONPATH": old_src})
    where = procs["old"].info["exploding"]
    if not where.startswith(old_src):
      raise RuntimeError(f"the 0.1 worker imported {where}, not {old_src}")
  out = {"info": {k: p.info for k, p in procs.items()}, "groups": {}}
  plan = []                                   # (group, name, proc, variant)
  for H in HS:
    cfg = dict(model="rnn", settings={"hidden": H}, n_scales=W["n_scales"],
               seeds=W["seeds"], length=W["T"])
    names = ["sweep", "generic", "plain"]
    if n_dev > 1:
      names.append("plain_sharded")
    if levers:
      names.append("O2")
    group = f"rnn/{H}"
    out["groups"][group] = {"config": cfg, "variants": {}}
    plan += [(group, n, "new", dict(cfg, kind=n)) for n in names]
    if old_src:
      plan.append((group, "old", "old", dict(cfg, kind="sweep")))
  for model, settings, T in others:
    cfg = dict(model=model, settings=settings, n_scales=W["n_scales"],
               seeds=W["seeds"], length=T)
    group = f"{model}/{next(iter(settings.values()))}"
    out["groups"][group] = {"config": cfg, "variants": {}}
    plan += [(group, n, "new", dict(cfg, kind=n)) for n in ("sweep", "plain")]
  try:
    for group, name, proc, variant in plan:
      path = os.path.join(tmp, f"dev{n_dev}_{group.replace('/', '_')}_"
                          f"{name}.npy")
      r = procs[proc].ask(op="setup", name=f"{group}:{name}",
                          variant=variant, save=path)
      r.update(times=[], path=path)
      out["groups"][group]["variants"][name] = r
      log(f"  {n_dev} dev {group} {name}: first call {r['first_s']:.2f}s")
    for rep in range(reps):                   # interleaved, order rotated
      for group in out["groups"]:
        entries = [p for p in plan if p[0] == group]
        k = rep % len(entries)
        for g, name, proc, _ in entries[k:] + entries[:k]:
          t = procs[proc].ask(op="time", name=f"{g}:{name}")["s"]
          out["groups"][g]["variants"][name]["times"].append(t)
  finally:
    for p in procs.values():
      p.close()
  for group, G in out["groups"].items():
    gs = np.linspace(0.5, 2, G["config"]["n_scales"])
    ref = np.load(G["variants"]["sweep"]["path"])
    for r in G["variants"].values():
      r["median_s"] = float(np.median(r["times"]))
      r["maxdiff"], r["maxdiff_ordered"] = _ordered_diff(
          np.load(r["path"]), ref, gs)
  return out


# ------------------------------------------------------------------- main


def _from_json(R):
  """Undo JSON's string keys where the results are keyed by ints (H,
  device count, k, grid size); workers' own results keep str(H) keys."""
  ints = lambda d: {int(k) if k.isdigit() else k: v for k, v in d.items()}
  for k in ("sweep", "roofline", "baselines", "devices", "lyapunov",
            "head_to_head"):
    R[k] = ints(R[k])
  for k in ("scaling", "memory"):
    R[k] = {n: ints(v) if isinstance(v, dict) else v
            for n, v in R[k].items()}
  return R


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="~2 min smoke run")
  ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
  ap.add_argument("--json", default=None, help="also dump raw results here")
  ap.add_argument("--render", default=None, metavar="JSON",
                  help="only re-render RESULTS.md from a --json dump")
  ap.add_argument("--old-src", default=OLD_SRC, metavar="PATH",
                  help="src/ of a 0.1.0 checkout for the 'before' row "
                  f"(git worktree add /tmp/exploding-0.1 {OLD_COMMIT}); "
                  "the row is skipped if missing")
  args = ap.parse_args(argv)
  if args.render:
    import _report
    with open(args.render) as f:
      text = _report.render(_from_json(json.load(f)))
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
  others = ([("lstm", {"hidden": 16}, 64),
             ("mlp", {"width": 16, "batch": 8}, 32)] if q else
            [("lstm", {"hidden": 64}, 256),
             ("mlp", {"width": 64, "batch": 16}, 64)])
  R["others"] = [dict(model=m, settings=s, length=T, flops=(
      model_flops_per_step(m, s) * n_points * T)) for m, s, T in others]
  reps = 3 if q else 5
  old_src = args.old_src if os.path.isdir(
      os.path.join(args.old_src, "exploding")) else None
  R["old"] = dict(src=args.old_src, commit=OLD_COMMIT, found=bool(old_src))

  R["env"] = environment()
  log(f"env: {R['env']['cpu']}, {R['env']['cores']} cores, load "
      f"{R['env']['loadavg_start']}")
  R["gemm_peak"] = gemm_peak(1024 if q else 2048)
  log(f"GEMM peak {R['gemm_peak']['gflops']:.1f} GFLOP/s")

  # 1. the sweep on W, 1 device, in process; compile accounting; baselines
  R["sweep"], R["roofline"], R["baselines"] = {}, {}, {}
  for H in HS:
    kw = sweep_kw(H, W["n_scales"], W["seeds"], W["T"])
    r = time_sweep(kw, reps)
    with _timing.CompileLog() as again:   # new scale values, same config
      ex.sweep("rnn", **dict(kw, weight_scales=kw["weight_scales"] * 1.01))
    r["recompiles_new_scales"] = again.count()
    with _timing.CompileLog() as again:   # a new length, same config
      ex.sweep("rnn", **dict(kw, length=kw["length"] + 37))
    r["recompiles_new_length"] = again.count()
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

    draws = _baselines.seed_draws(ex.rnn.model(H), W["seeds"])
    gs = kw["weight_scales"]
    b = {}
    for name, make in (("per_point_jvp", _baselines.per_point_jvp_loop),
                       ("jvp_growth_per_point",
                        _baselines.jvp_growth_per_point)):
      b[name] = _timing.first_and_median(make(draws, gs, W["T"]),
                                         repeats=2 if q else 3)
      b[name].pop("compiled")
    b["naive_grad"] = _baselines.naive_grad_subset(
        draws, gs, W["T"], n_lengths=3 if q else 6,
        per_length=3 if q else 4, rng=rng)
    log(f"baselines H={H}: per-point jvp loop "
        f"{b['per_point_jvp']['median_s']:.2f}s, jvp_growth per point "
        f"{b['jvp_growth_per_point']['median_s']:.2f}s, naive grad "
        f"extrapolated {b['naive_grad']['run_s']:.1f}s")
    if _baselines.torch_available():
      b["torch"] = _baselines.torch_baselines(
          draws, gs, W["T"], rng, n_lengths=3 if q else 6,
          per_length=3 if q else 4, repeats=2,
          try_compile=(not q and H == HS[0]))
      log(f"torch H={H}: batched eager "
          f"{b['torch']['batched_eager']['median_s']:.3f}s")
    else:
      b["torch"] = "not installed in this run"
    R["baselines"][H] = b

  # 2. head to head (issue 12): plain program, sweep fused / generic / O2,
  # the 0.1.0 sweep; LSTM and MLP; 1 and 2 host devices, interleaved
  tmp = tempfile.mkdtemp(prefix="exploding-bench-")
  R["head_to_head"] = {}
  for n in (1, 2):
    R["head_to_head"][n] = head_to_head(
        n, W, HS, others if n == 1 else (), reps, old_src, tmp,
        levers=(n == 1))
    log(f"head to head, {n} device(s): " + ", ".join(
        f"{g} " + "/".join(f"{k} {v['median_s']:.3f}" for k, v in
                           G["variants"].items())
        for g, G in R["head_to_head"][n]["groups"].items()))

  # 3. devices: 1 and 2 from the head to head; 4, 8 in fresh processes
  R["devices"] = {}
  for n in (1, 2):
    R["devices"][n] = {"devices": n}
    for H in HS:
      v = R["head_to_head"][n]["groups"][f"rnn/{H}"]["variants"]["sweep"]
      R["devices"][n][str(H)] = dict(v, save=v["path"])
  for n in (() if q else (4, 8)):
    # 4 and 8 devices oversubscribe 2 cores; H=256 there costs minutes
    task = dict(kind="sweep", hidden=list(HS[:1]), n_scales=W["n_scales"],
                seeds=W["seeds"], length=W["T"], repeats=reps, max_s=8,
                save=os.path.join(tmp, f"dev{n}_H{{H}}.npy"))
    R["devices"][n] = _worker.run_task(
        task, f"--xla_force_host_platform_device_count={n}")
    R["devices"][n][str(HS[0])]["save"] = task["save"].format(H=HS[0])
    log(f"devices={n}: H={HS[0]} "
        f"{R['devices'][n][str(HS[0])]['median_s']:.3f}s")
  gs = np.linspace(0.5, 2, W["n_scales"])
  for n, d in R["devices"].items():
    for H in HS:
      if str(H) in d:
        a, ref = (np.load(d[str(H)]["save"]),
                  np.load(R["devices"][1][str(H)]["save"]))
        d[str(H)]["maxdiff"], d[str(H)]["maxdiff_ordered"] = _ordered_diff(
            a, ref, gs)
        d[str(H)]["nan_mismatch"] = int(np.sum(np.isnan(a) != np.isnan(ref)))

  # 4. memory: peak RSS vs T at H=256 (4 scales x 2 seeds), fresh processes
  R["memory"] = {}
  mem_T = (256, 1024) if q else (256, 4096, 16384)
  for method in ("jvp", "vjp"):
    for T in mem_T:
      R["memory"][f"{method}/{T}"] = _worker.run_task(dict(
          kind="memory", method=method, length=T, hidden=128 if q else 256,
          n_scales=4, seeds=2))
    log(f"memory {method}: " + ", ".join(
        f"T={T} {R['memory'][f'{method}/{T}']['peak_mib']:.0f} MiB"
        for T in mem_T))

  # 5. scaling (in process, 1 device)
  sc = {}
  Hs = (16, 32, 64) if q else (32, 64, 128, 256, 512, 1024)
  sT = 32 if q else 64
  sc["hidden_T"] = sT
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
    r = time_sweep(kw, 2, max_s=10)
    r["per_step_s"] = r["median_s"] / lT
    r["per_point_step_s"] = r["median_s"] / (lT * 8)
    R["lyapunov"][k] = r
  R["lyapunov_cfg"] = dict(hidden=lH, length=lT, points=8)
  log("lyapunov done")

  # 7. compile-time levers: jax's persistent compilation cache (what the
  # CLI and the figure runner turn on), a fresh process twice
  cache = tempfile.mkdtemp(prefix="exploding-xla-cache-")
  task = dict(kind="sweep", hidden=list(HS), n_scales=W["n_scales"],
              seeds=W["seeds"], length=W["T"], repeats=2)
  env = {"JAX_COMPILATION_CACHE_DIR": cache,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}
  one = "--xla_force_host_platform_device_count=1"
  R["persistent_cache"] = dict(cold=_worker.run_task(task, one, env_vars=env),
                               warm=_worker.run_task(task, one, env_vars=env))
  log("persistent cache done")

  R["env"]["loadavg_end"] = os.getloadavg()
  R["env"]["total_s"] = time.perf_counter() - T0
  import _report
  text = _report.render(R)
  with open(args.out, "w") as f:
    f.write(text)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(R, f, default=str, indent=1)
  log(f"wrote {args.out}")


if __name__ == "__main__":
  main()
