"""Sweeps: equality with the per-point engine, sharding, cache, resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import exploding as ex
from tests import _multidevice

SMALL = dict(weight_scales=[0.6, 1.0, 1.7], length=40, seeds=2, hidden=12,
             progress=False)


@pytest.mark.parametrize("method", ["jvp", "vjp", "lyapunov"])
def test_sweep_equals_engine_per_point(method):
  m = ex.sweep("rnn", method=method, key=3, **SMALL)
  assert m.log_growth.shape == (3, 40, 2)
  for s in range(2):
    key = jax.random.fold_in(jax.random.key(3), s)
    k_init, k_state, k_probe, _ = jax.random.split(key, 4)
    p0 = ex.rnn.init(k_init, 12)
    h0 = jax.random.normal(k_state, (12,), jnp.float32)
    for i, g in enumerate(SMALL["weight_scales"]):
      p = p0.replace(weight_scale=jnp.float32(g))
      f = lambda h, x: ex.rnn.step(p, h, x)
      if method == "jvp":
        want = ex.jvp_growth(f, h0, length=40, key=k_probe).log_growth
      elif method == "vjp":
        want = ex.vjp_growth(f, h0, length=40, key=k_probe).log_growth[::-1]
      else:
        ly = ex.lyapunov_spectrum(f, h0, length=40, key=k_probe, k=1)
        want = ly.cumulative[:, 0]
      np.testing.assert_allclose(m.log_growth[i, :, s], want, rtol=2e-5,
                                 atol=2e-5)


@pytest.mark.parametrize("activation,bias_scale,inputs", [
    ("relu", 0.0, None),            # homogeneous: the state is renormalised
    ("sigmoid", 0.5, "gaussian"),   # input drive, one GEMM before the scan
    ("linear", 0.0, "zeros"),       # input_size > 0 with a zero input
])
def test_rnn_jvp_all_scales_path_equals_engine(activation, bias_scale, inputs):
  """The sweep's RNN forward path (all scales in one GEMM per step) against
  the public engine on the public model, point by point."""
  n_in = 0 if inputs is None else 5
  kw = dict(SMALL, activation=activation, bias_scale=bias_scale,
            input_size=n_in, inputs=None if inputs == "zeros" else inputs)
  m = ex.sweep("rnn", key=5, **kw)
  for s in range(2):
    k_init, k_state, k_probe, k_in = jax.random.split(
        jax.random.fold_in(jax.random.key(5), s), 4)
    p0 = ex.rnn.init(k_init, 12, activation=activation,
                     bias_scale=bias_scale, input_size=n_in)
    h0 = jax.random.normal(k_state, (12,), jnp.float32)
    xs = None if inputs is None else jnp.zeros((40, n_in))
    if inputs == "gaussian":
      xs = jax.random.normal(k_in, (40, n_in), jnp.float32)
    for i, g in enumerate(SMALL["weight_scales"]):
      p = p0.replace(weight_scale=jnp.float32(g))
      want = ex.jvp_growth(lambda h, x: ex.rnn.step(p, h, x), h0, xs,
                           length=40, key=k_probe)
      np.testing.assert_allclose(m.log_growth[i, :, s], want.log_growth,
                                 rtol=2e-5, atol=2e-5)
      np.testing.assert_allclose(m.log_state_norm[i, :, s],
                                 want.log_state_norm, rtol=2e-5, atol=2e-5)


def test_mlp_and_lstm_sweeps_match_engine():
  m = ex.sweep("mlp", weight_scales=[0.8, 1.5], length=6, seeds=1, width=8,
               batch=4, batchnorm=True, residual=True, progress=False)
  key = jax.random.fold_in(jax.random.key(0), 0)
  k_init, k_state, k_probe, _ = jax.random.split(key, 4)
  p = ex.mlp.init(k_init, 8, 6, batchnorm=True, residual=True)
  p = p.replace(weight_scale=jnp.float32(1.5))
  x = jax.random.normal(k_state, (4, 8), jnp.float32)
  g = ex.jvp_growth(lambda h, l: ex.mlp.step(p, h, l), x, ex.mlp.layers(p),
                    key=k_probe)
  np.testing.assert_allclose(m.log_growth[1, :, 0], g.log_growth, rtol=1e-5)
  m = ex.sweep("lstm", weight_scales=[1.0], length=10, seeds=1, hidden=4,
               forget_bias=2.0, progress=False)
  assert m.config["forget_bias"] == 2.0 and np.all(np.isfinite(m.log_growth))


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
  print(json.dumps(dict(devices=jax.device_count(), lg=a.log_growth.tolist(),
                        lg2=b.log_growth.tolist(), compiles=[ca, cb, cc])))
  """
  out8 = _multidevice.run(code, devices=8)
  out1 = _multidevice.run(code, devices=1)
  assert out8["devices"] == 8 and out1["devices"] == 1
  # Same program per point; GEMM blocking differs with the per-device batch,
  # so agreement is to float32 rounding, not bits.
  np.testing.assert_allclose(out8["lg"], out1["lg"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out8["lg"], out8["lg2"], rtol=1e-5, atol=1e-5)
  assert out8["compiles"] == [1, 1, 0] and out1["compiles"] == [1, 1, 0]


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
  script = textwrap.dedent(f"""
  import numpy as np, exploding as ex
  m = ex.sweep("rnn", weight_scales=np.linspace(0.5, 2, 40), length=400,
               seeds=2, hidden=64, chunk_size=2, cache_dir={str(cache)!r},
               progress=False)
  m.save({str(tmp_path / 'resumed.npz')!r})
  """)
  proc = subprocess.Popen([sys.executable, "-c", script])
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if cache.exists() and any(f.endswith(".npz") and ".tmp" not in f
                              for f in os.listdir(cache)):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = [f for f in os.listdir(cache) if ".tmp" not in f]
  assert 1 <= len(done) < 40, "kill should land mid-sweep"
  subprocess.run([sys.executable, "-c", script], check=True)
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
  assert back.config == m.config
  assert m.config["version"] == ex.__version__ and m.config["device_count"] >= 1
  # A file from another version loads, with a warning.
  with np.load(tmp_path / "m.npz") as f:
    arrays = dict(f)
  config = json.loads(str(arrays["config_json"]))
  config["version"] = "0.0.1"
  arrays["config_json"] = np.array(json.dumps(config))
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


def test_qr_sweeps_finish_on_several_host_devices():
  # XLA CPU with 2 host devices hung on these (QR inside the sharded scan);
  # the sweep runs them on one CPU device. A hang fails via the timeout.
  code = """
  import json, numpy as np, jax, exploding as ex
  a = ex.sweep("rnn", weight_scales=np.linspace(0.3, 2.5, 23), length=256,
               seeds=4, hidden=128, init="orthogonal", progress=False)
  b = ex.sweep("rnn", weight_scales=np.linspace(0.3, 2.5, 8), length=64,
               seeds=2, hidden=64, method="lyapunov", k=8, progress=False)
  print(json.dumps(dict(devices=jax.device_count(),
                        used=[a.config["device_count"], b.config["device_count"]],
                        finite=bool(np.isfinite(b.exponents).all()))))
  """
  out = _multidevice.run(code, devices=2, timeout=240)
  assert out["devices"] == 2 and out["used"] == [1, 1] and out["finite"]
