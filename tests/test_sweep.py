"""Sweeps: equality with the per-point engine, sharding, cache, resume."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exploding as ex
from tests import _multidevice

SMALL = dict(weight_scales=[0.6, 1.0, 1.7], length=40, seeds=2, hidden=12,
             progress=False)


def _draws(key, seed, hidden, **init_kw):
  """The sweep's documented draws for one seed."""
  k_init, k_state, k_probe, k_in = jax.random.split(
      jax.random.fold_in(jax.random.key(key), seed), 4)
  p = ex.rnn.init(k_init, hidden, **init_kw)
  h0 = jax.random.normal(k_state, (hidden,), jnp.float32)
  return p, h0, k_probe, k_in


@pytest.mark.parametrize("method", ["jvp", "vjp", "lyapunov"])
def test_sweep_equals_engine_per_point(method):
  m = ex.sweep("rnn", method=method, key=3, **SMALL)
  assert m.log_growth.shape == (3, 40, 2)
  assert list(m.axes) == ["weight_scale"]
  for s in range(2):
    p0, h0, k_probe, _ = _draws(3, s, 12)
    for i, g in enumerate(SMALL["weight_scales"]):
      p = p0.replace(weight_scale=jnp.float32(g))
      if method == "jvp":
        want = ex.jvp_growth(ex.rnn.step, p, h0, length=40, key=k_probe)
        want = want.log_growth
      elif method == "vjp":
        want = ex.vjp_growth(ex.rnn.step, p, h0, length=40, key=k_probe)
        want = want.log_growth
      else:
        ly = ex.lyapunov_spectrum(ex.rnn.step, p, h0, length=40,
                                  key=k_probe, k=1)
        want = ly.cumulative[:, 0]
      np.testing.assert_allclose(m.log_growth[i, :, s], want, rtol=2e-5,
                                 atol=2e-5)


@pytest.mark.parametrize("activation,bias_scale,inputs", [
    ("relu", 0.0, None),            # homogeneous: the state is renormalised
    ("sigmoid", 0.5, "gaussian"),   # an input drive
    ("linear", 0.0, "zeros"),       # input_size > 0 with a zero input
])
@pytest.mark.parametrize("method", ["jvp", "lyapunov"])
def test_rnn_fused_advance_equals_generic_core(activation, bias_scale,
                                               inputs, method):
  """The RNN's fused advance (all points of a seed in one GEMM per step)
  against the generic core on the same Model without it, point by point."""
  n_in = 0 if inputs is None else 5
  fused = ex.rnn.model(12, activation=activation, bias_scale=bias_scale,
                       input_size=n_in)
  generic = dataclasses.replace(fused, advance=None)
  xs = np.zeros((40, n_in), np.float32) if inputs == "zeros" else None
  kw = dict(grid={"weight_scale": [0.6, 1.0, 1.7],
                  "bias_scale": [bias_scale, 0.3]}, length=40, seeds=2,
            key=5, inputs="gaussian" if inputs == "gaussian" else xs,
            method=method, k=2, progress=False)
  a, b = ex.sweep(fused, **kw), ex.sweep(generic, **kw)
  assert a.log_growth.shape == (3, 2, 40, 2)
  np.testing.assert_allclose(a.log_growth, b.log_growth, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(a.log_state_norm, b.log_state_norm, rtol=2e-5,
                             atol=2e-5)
  np.testing.assert_array_equal(a.overflow_step, b.overflow_step)


def test_mlp_and_lstm_sweeps_match_engine():
  m = ex.sweep("mlp", weight_scales=[0.8, 1.5], length=6, seeds=1, width=8,
               batch=4, batchnorm=True, residual=True, progress=False)
  k_init, k_state, k_probe, _ = jax.random.split(
      jax.random.fold_in(jax.random.key(0), 0), 4)
  p = ex.mlp.init(k_init, 8, 6, batchnorm=True, residual=True)
  p = p.replace(weight_scale=jnp.float32(1.5))
  x = jax.random.normal(k_state, (4, 8), jnp.float32)
  g = ex.jvp_growth(ex.mlp.step, p, x, ex.mlp.layers(p), key=k_probe)
  np.testing.assert_allclose(m.log_growth[1, :, 0], g.log_growth, rtol=1e-5)
  m = ex.sweep("lstm", grid={"forget_bias": [0.0, 2.0]}, length=10, seeds=1,
               hidden=4, progress=False)
  assert m.config["model"] == "lstm" and m.log_growth.shape == (2, 10, 1)
  p = ex.lstm.init(k_init, 4, forget_bias=2.0)
  h, c = jax.random.normal(k_state, (2, 4), jnp.float32)
  g = ex.jvp_growth(ex.lstm.step, p, (h, c), length=10, key=k_probe)
  np.testing.assert_allclose(m.log_growth[1, :, 0], g.log_growth, rtol=1e-5)


def test_lstm_forget_bias_sweep_decays_as_log_sigmoid():
  # At a tiny recurrent weight dc'/dc = diag(sigmoid(b_f)) dominates: the
  # growth per step is log sigmoid(b_f) (Gers et al. 2000).
  bfs = np.array([0.0, 1.0, 3.0, 5.0])
  m = ex.sweep("lstm", grid={"forget_bias": bfs, "weight_scale": [1e-3]},
               length=200, seeds=2, hidden=16, progress=False)
  np.testing.assert_allclose(m.rate()[:, 0], np.log(1 / (1 + np.exp(-bfs))),
                             atol=0.01)


def test_two_axis_sweep_follows_the_mean_field_critical_line():
  # With a bias the order-to-chaos edge moves to chi1 = 1 of the q-map
  # (Poole et al. 2016). The rate crosses zero tangentially, so the crossing
  # needs a fine grid and 4 seeds; measured here 1.41, 1.52, 1.65 vs 1.40,
  # 1.55, 1.68 (sigma_b = 0 is excluded: the flat (g - 1)^2 crossing puts
  # the finite-T estimate 10-25% above 1).
  bs = np.array([0.3, 0.5, 0.7])
  want = np.sqrt([ex.theory.critical_sigma_w2("tanh", b**2) for b in bs])
  gs = np.linspace(1.2, 1.8, 13)
  m = ex.sweep("rnn", grid={"weight_scale": gs, "bias_scale": bs},
               length=600, seeds=4, hidden=256, progress=False)
  assert m.log_growth.shape == (13, 3, 600, 4)
  got = m.critical_scale(axis="weight_scale")
  assert got.shape == (3,)
  np.testing.assert_allclose(got, want, rtol=0.05)
  assert m.critical_scale(axis="bias_scale").shape == (13,)


def _flax_model(cell_cls, n, recurrent):
  """A flax cell as a Model: zero input, recurrent kernels N(0, 1/n) scaled
  by the knob ``weight_scale`` (the kernels are params, so data)."""
  cell = cell_cls(features=n)
  x0 = jnp.zeros((1,))

  def init(key):
    k_cell, k_w = jax.random.split(key)
    params = cell.init(k_cell, jnp.zeros(n), x0)["params"]
    for name, k in zip(recurrent, jax.random.split(k_w, len(recurrent))):
      params[name]["kernel"] = jax.random.normal(k, (n, n)) / np.sqrt(n)
    return {"cell": params, "weight_scale": jnp.float32(1.0)}

  def step(p, h, x):
    del x
    params = dict(p["cell"])
    for name in recurrent:
      params[name] = {**params[name],
                      "kernel": p["weight_scale"] * params[name]["kernel"]}
    return cell.apply({"params": params}, h, x0)[0]

  return ex.Model(init, step, lambda key: jax.random.normal(key, (n,)),
                  name=cell_cls.__name__)


def test_flax_simple_cell_sweep_finds_the_edge_of_chaos():
  model = _flax_model(flax.linen.SimpleCell, 128, ["h"])
  m = ex.sweep(model, grid={"weight_scale": np.linspace(0.7, 1.5, 9)},
               length=300, seeds=2, progress=False)
  assert abs(m.critical_scale() - 1.0) < 0.1


def test_flax_gru_sweep_equals_the_engine_on_the_same_draws():
  model = _flax_model(flax.linen.GRUCell, 16, ["hr", "hz", "hn"])
  gs = [0.5, 2.0, 8.0]
  m = ex.sweep(model, grid={"weight_scale": gs}, length=50, seeds=2, key=4,
               progress=False)
  assert m.log_growth.shape == (3, 50, 2)
  assert np.all(np.isfinite(m.log_growth))
  for s in range(2):
    k_init, k_state, k_probe, _ = jax.random.split(
        jax.random.fold_in(jax.random.key(4), s), 4)
    p, h0 = model.init(k_init), model.state0(k_state)
    for i, g in enumerate(gs):
      want = ex.jvp_growth(model.step, {**p, "weight_scale": jnp.float32(g)},
                           h0, length=50, key=k_probe)
      np.testing.assert_allclose(m.log_growth[i, :, s], want.log_growth,
                                 rtol=2e-5, atol=2e-5)


def test_sharded_equals_unsharded_and_compiles_once():
  code = """
  import json, logging, numpy as np, jax, exploding as ex
  records = []
  class H(logging.Handler):
    def emit(self, r): records.append(r.getMessage())
  logging.getLogger("jax").addHandler(H())
  def compiles(**kw):
    records.clear()
    with jax.log_compiles():
      m = ex.sweep("rnn", **kw)
    return m, sum("Compiling" in r and "local" in r for r in records)
  kw = dict(weight_scales=np.linspace(0.5, 2.0, 11), length=50, seeds=3,
            hidden=16, progress=False, activation="relu")
  a, ca = compiles(**kw)
  b, cb = compiles(chunk_size=3 * 8, **kw)   # two chunks, one program
  c, cc = compiles(**kw)                     # same config: cached program
  # New grid values and new draws (another key) are data: no recompile.
  d, cd = compiles(**dict(kw, weight_scales=np.linspace(0.6, 2.1, 11), key=7))
  # A new length is data too: the sweep runs blocks of steps from a carry.
  e, ce = compiles(**dict(kw, length=333))
  print(json.dumps(dict(devices=jax.device_count(), lg=a.log_growth.tolist(),
                        lg2=b.log_growth.tolist(), compiles=[ca, cb, cc, cd, ce],
                        prefix=bool(np.array_equal(e.log_growth[:, :50],
                                                   a.log_growth)),
                        differs=bool(np.any(d.log_growth != a.log_growth)))))
  """
  out8 = _multidevice.run(code, devices=8)
  out1 = _multidevice.run(code, devices=1)
  assert out8["devices"] == 8 and out1["devices"] == 1
  # Same program per point; GEMM blocking differs with the per-device batch,
  # so agreement is to float32 rounding, not bits.
  np.testing.assert_allclose(out8["lg"], out1["lg"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out8["lg"], out8["lg2"], rtol=1e-5, atol=1e-5)
  # One init and one block program per configuration; none per length.
  assert out8["compiles"] == [2, 2, 0, 0, 0]
  assert out1["compiles"] == [2, 2, 0, 0, 0]
  assert out8["prefix"] and out1["prefix"]
  assert out8["differs"] and out1["differs"]


def test_cache_reuses_and_config_change_recomputes(tmp_path):
  kw = dict(SMALL, cache_dir=str(tmp_path), chunk_size=2)
  a = ex.sweep("rnn", **kw)
  files = sorted(os.listdir(tmp_path))
  assert len(files) == 3                        # one scale (2 seeds) a chunk
  mtimes = {f: os.path.getmtime(tmp_path / f) for f in files}
  b = ex.sweep("rnn", **kw)
  np.testing.assert_array_equal(a.log_growth, b.log_growth)
  assert {f: os.path.getmtime(tmp_path / f) for f in files} == mtimes
  for change in [dict(bias_scale=0.1), dict(key=1), dict(activation="relu"),
                 dict(length=41), dict(hidden=13), dict(method="vjp")]:
    c = ex.sweep("rnn", **{**kw, **change})
    assert not np.array_equal(c.log_growth[..., :40] if c.shape[1] > 40
                              else c.log_growth, a.log_growth), change
  assert len(os.listdir(tmp_path)) == 3 * 7
  # A truncated chunk is detected and recomputed, never read.
  victim = tmp_path / files[0]
  victim.write_bytes(victim.read_bytes()[:50])
  d = ex.sweep("rnn", **kw)
  np.testing.assert_array_equal(a.log_growth, d.log_growth)


def test_kill_and_resume_is_bit_identical(tmp_path):
  cache = tmp_path / "cache"
  sweep_call = textwrap.dedent(f"""
  m = ex.sweep("rnn", weight_scales=np.linspace(0.5, 2, 40), length=400,
               seeds=2, hidden=64, chunk_size=2, cache_dir={str(cache)!r},
               progress=False)
  m.save({str(tmp_path / 'resumed.npz')!r})
  """)
  # The first run is SIGKILLed right after its third chunk lands on disk: a
  # hard kill mid-sweep at a known place, however fast the machine is.
  killed = textwrap.dedent("""
  import os, signal, sys, numpy as np, exploding as ex
  sw = sys.modules["exploding.sweep"]
  real, writes = sw.save_npz_atomic, []
  def save_then_die(path, arrays):
    real(path, arrays)
    writes.append(path)
    if len(writes) == 3:
      os.kill(os.getpid(), signal.SIGKILL)
  sw.save_npz_atomic = save_then_die
  """) + sweep_call
  proc = subprocess.run([sys.executable, "-c", killed], timeout=300)
  assert proc.returncode == -signal.SIGKILL
  done = [f for f in os.listdir(cache) if ".tmp" not in f]
  assert len(done) == 3
  stamps = {f: os.stat(cache / f).st_mtime_ns for f in done}
  subprocess.run([sys.executable, "-c",
                  "import numpy as np, exploding as ex\n" + sweep_call],
                 check=True, timeout=300)
  # The finished chunks were reused, not recomputed and rewritten.
  assert {f: os.stat(cache / f).st_mtime_ns for f in done} == stamps
  assert len([f for f in os.listdir(cache) if ".tmp" not in f]) > 3
  resumed = ex.GradientMap.load(tmp_path / "resumed.npz")
  fresh = ex.sweep("rnn", weight_scales=np.linspace(0.5, 2, 40), length=400,
                   seeds=2, hidden=64, chunk_size=2, progress=False)
  np.testing.assert_array_equal(resumed.log_growth, fresh.log_growth)


def test_save_load_round_trip(tmp_path):
  m = ex.sweep("rnn", method="lyapunov", k=2, **SMALL)
  m.save(tmp_path / "m.npz")
  back = ex.GradientMap.load(tmp_path / "m.npz")
  for name in ["log_growth", "log_state_norm", "overflow_step",
               "weight_scales", "steps", "exponents"]:
    np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
  assert list(back.axes) == ["weight_scale"]
  assert back.config == m.config
  assert m.config["version"] == ex.__version__ and m.config["device_count"] >= 1
  # A file from another version loads, with a warning.
  with np.load(tmp_path / "m.npz") as f:
    arrays = dict(f)
  meta = json.loads(str(arrays["meta_json"]))
  meta["config"]["version"] = "0.0.1"
  arrays["meta_json"] = np.array(json.dumps(meta))
  np.savez(tmp_path / "old.npz", **arrays)
  with pytest.warns(UserWarning, match="0.0.1"):
    old = ex.GradientMap.load(tmp_path / "old.npz")
  np.testing.assert_array_equal(old.log_growth, m.log_growth)


@pytest.mark.parametrize("g", [0.5, 0.9, 1.3, 2.0])
def test_rate_linear_identity_is_log_g(g):
  m = ex.sweep("rnn", weight_scales=[g], length=200, seeds=2, hidden=8,
               activation="linear", init="identity", progress=False)
  np.testing.assert_allclose(m.rate(), np.log(g), atol=1e-5)


def test_rate_linear_gaussian_is_log_g_plus_finite_width_offset():
  # A Gaussian W0 (entries N(0, 1/n)) has spectral radius slightly above 1
  # at finite n (circular law edge plus fluctuations), so the long-time rate
  # is log g + log rho(W0), a small positive offset.
  gs = np.array([0.5, 1.0, 2.0])
  m = ex.sweep("rnn", weight_scales=gs, length=800, seeds=4, hidden=64,
               activation="linear", progress=False)
  offset = m.rate(burn_in=400) - np.log(gs)
  assert np.all(offset > 0) and np.all(offset < 0.15)
  np.testing.assert_allclose(offset, offset.mean(), atol=1e-3)


def test_tanh_rnn_critical_scale_near_one():
  # Mean field puts the tanh edge of chaos (sigma_b = 0) at g = 1, but the
  # exponent is flat there (tanh's cubic term saturates it: rate ~ (g-1)^2
  # above 1), so at finite width and length the measured zero crossing sits
  # in a band above 1: at hidden 256, T = 600 it lands near 1.1-1.25.
  m = ex.sweep("rnn", weight_scales=np.linspace(0.8, 1.6, 9), length=600,
               seeds=3, hidden=256, progress=False)
  assert 1.0 <= m.critical_scale() <= 1.3


def test_relu_rnn_critical_scale_near_sqrt2():
  m = ex.sweep("rnn", weight_scales=np.linspace(1.1, 1.7, 7), length=400,
               seeds=3, hidden=256, activation="relu", progress=False)
  assert abs(m.critical_scale() - np.sqrt(2)) < 0.12


BAD = [
    (dict(weight_scales=[-1.0]), "weight_scales"),
    (dict(weight_scales=[]), "weight_scales"),
    (dict(length=0), "length"),
    (dict(seeds=0), "seeds"),
    (dict(hidden=0), "hidden"),
    (dict(activation="swish"), "activation"),
    (dict(method="fd"), "method"),
    (dict(init="he"), "init"),
    (dict(bias_scale=-1.0), "bias_scale"),
    (dict(state0=jnp.ones(5)), "state0"),
    (dict(inputs="gaussian"), "input_size"),
    (dict(inputs=np.ones((3, 2)), input_size=2), "inputs"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(batch=4), "unknown"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_sweep_rejects_bad_input(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    ex.sweep("rnn", **{**SMALL, **kwargs})


def test_sweep_rejects_unknown_model():
  with pytest.raises(ValueError, match="model"):
    ex.sweep("gru", **SMALL)


@pytest.mark.parametrize("devices", [2, 8])
def test_lyapunov_sweeps_shard_over_host_devices(devices):
  # jaxlib's CPU QR deadlocked XLA's thread pool when several host devices
  # ran it at once (this config hung on 2 and 8 devices); the sweep now
  # shards Lyapunov sweeps too, with a plain-XLA QR there, and must agree
  # with LAPACK's on one device.
  code = """
  import json, numpy as np, jax, exploding as ex
  a = ex.sweep("rnn", weight_scales=np.linspace(0.3, 2.5, 23), length=64,
               seeds=4, hidden=128, init="orthogonal", progress=False)
  b = ex.sweep("rnn", weight_scales=np.linspace(0.3, 2.5, 13), length=24,
               seeds=4, hidden=128, method="lyapunov", k=32, progress=False)
  print(json.dumps(dict(devices=jax.device_count(),
                        used=[a.config["device_count"], b.config["device_count"]],
                        exponents=b.exponents.tolist(),
                        rate=a.rate().tolist())))
  """
  out = _multidevice.run(code, devices=devices, timeout=240)
  one = _multidevice.run(code, devices=1, timeout=240)
  assert out["devices"] == devices and out["used"] == [devices, devices]
  np.testing.assert_allclose(out["exponents"], one["exponents"], atol=2e-4)
  np.testing.assert_allclose(out["rate"], one["rate"], atol=1e-6)


def test_cache_key_knows_the_package_source(tmp_path):
  """Editing the package (a copy of it) makes the same sweep recompute."""
  import shutil
  src = os.path.dirname(os.path.dirname(ex.__file__))
  copy = tmp_path / "src"
  shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__",
                                                           "*.egg-info"))
  cache = tmp_path / "cache"
  code = textwrap.dedent(f"""
  import exploding as ex
  assert ex.__file__.startswith({str(copy)!r}), ex.__file__
  ex.sweep("rnn", weight_scales=[0.5, 1.5], length=8, seeds=1, hidden=4,
           cache_dir={str(cache)!r}, progress=False)
  """)
  env = dict(os.environ, PYTHONPATH=str(copy))
  run = lambda: subprocess.run([sys.executable, "-c", code], env=env,
                               check=True, cwd=tmp_path)
  run()
  first = set(os.listdir(cache))
  run()
  assert set(os.listdir(cache)) == first            # same code: reused
  with open(copy / "exploding" / "_core.py", "a") as fh:
    fh.write("\n# an edit\n")
  run()
  assert len(set(os.listdir(cache)) - first) == len(first)   # recomputed


def test_rate_and_critical_scale_edge_cases():
  # Descending grid values: the crossing is found along increasing g.
  gs = [2.0, 1.5, 1.0, 0.5]
  m = ex.sweep("rnn", weight_scales=gs, length=64, seeds=1, hidden=8,
               activation="linear", init="identity", progress=False)
  np.testing.assert_allclose(m.rate(), np.log(gs), atol=1e-5)
  np.testing.assert_allclose(m.critical_scale(), 1.0, atol=1e-4)
  # A map of length 1: the rate is the one-step growth.
  one = ex.sweep("rnn", weight_scales=gs, length=1, seeds=2, hidden=8,
                 activation="linear", init="identity", progress=False)
  np.testing.assert_allclose(one.rate(), np.log(gs), atol=1e-6)
  np.testing.assert_allclose(one.critical_scale(), 1.0, atol=1e-4)


def test_saved_files_follow_the_umask(tmp_path):
  m = ex.sweep("rnn", weight_scales=[1.0], length=4, seeds=1, hidden=4,
               cache_dir=tmp_path / "c", progress=False)
  old = os.umask(0o022)
  try:
    m.save(tmp_path / "m.npz")
  finally:
    os.umask(old)
  assert (os.stat(tmp_path / "m.npz").st_mode & 0o777) == 0o644


@pytest.mark.parametrize("kwargs,match", [
    (dict(weight_scales=[1e39]), "not representable"),
    (dict(weight_scales=[1.0], grid={"weight_scale": [1.0]}), "not both"),
    (dict(grid={"gain": [1.0]}), "knob"),
    (dict(weight_scales=[1.0], dtype="float64"), "x64"),
    (dict(weight_scales=[1.0], key=True), "key"),
    (dict(weight_scales=[1.0], batchnorm=True), "unknown"),
    (dict(weight_scales=[1.0 + 1j]), "real"),
])
def test_sweep_rejects_bad_grids_and_settings(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    ex.sweep("rnn", length=4, seeds=1, hidden=4, progress=False, **kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(weight_scales=np.linspace(0.5, 2, 100_000), length=100_000),
    dict(weight_scales=[1.0], length=10**9),
    dict(weight_scales=[1.0], length=4, hidden=200_000),
])
def test_impossible_sizes_fail_before_any_work(kwargs, monkeypatch):
  def no_work(*args, **kw):
    raise AssertionError("compiled or drew before refusing the size")
  module = sys.modules["exploding.sweep"]
  monkeypatch.setattr(module, "_scan_program", no_work)
  monkeypatch.setattr(module, "_draws", no_work)
  with pytest.raises(MemoryError, match="GiB"):
    ex.sweep("rnn", seeds=8, progress=False, **kwargs)
