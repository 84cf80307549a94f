"""Remedies move the vanishing/exploding boundary, measured on one grid."""

import numpy as np
import pytest

import exploding as ex


def test_rnn_remedies():
  gs = [0.3, 0.7, 1.0, 1.5, 2.5]
  r = ex.compare_remedies("rnn", weight_scales=gs, length=96, seeds=2,
                          hidden=24, remedies=["relu", "lstm b_f=0",
                                               "lstm b_f=3"], progress=False)
  assert set(r.maps) == {"tanh", "relu", "lstm b_f=0", "lstm b_f=3"}
  # tanh: log g below the edge (mean field: rate = log g for g < 1).
  np.testing.assert_allclose(r.rate["tanh"][0], np.log(0.3), atol=0.1)
  assert r.rate["tanh"][-1] > 0.05
  # ReLU's slope is 1 on half the units only: its edge lies beyond tanh's.
  assert r.critical_scale["relu"] > r.critical_scale["tanh"]
  assert r.shift["relu"] > 0
  # The forget gate holds the product near one at every scale: a larger
  # forget bias keeps it closer (the cell path decays as sigmoid(b_f)).
  assert np.all(np.abs(r.rate["lstm b_f=3"]) < 0.05)
  assert np.all(r.rate["lstm b_f=3"] > r.rate["lstm b_f=0"])
  assert r.rate["lstm b_f=3"][0] > r.rate["tanh"][0] + 1.0


def test_mlp_remedies_batchnorm_explodes_at_every_scale():
  gs = [0.5, 1.0, 2.0, 3.0]
  r = ex.compare_remedies("mlp", weight_scales=gs, length=24, seeds=2,
                          hidden=32, batch=8,
                          remedies=["batchnorm", "residual"], progress=False)
  # Batch norm makes the layer map scale-invariant: the rate is independent
  # of the weight scale and positive (Yang et al. 2019): gradients explode.
  bn = r.rate["batchnorm"]
  np.testing.assert_allclose(bn, bn.mean(), rtol=1e-3)
  predicted = 0.5 * np.log(ex.theory.batchnorm_gradient_rate("tanh", 8))
  # width 32, 2 seeds: finite-width bias and seed noise ~15% (theory is
  # infinite width).
  np.testing.assert_allclose(bn.mean(), predicted, rtol=0.2)
  assert np.isnan(r.critical_scale["batchnorm"])
  # Residual connections: the identity path keeps the product from
  # vanishing at any scale.
  assert np.all(r.rate["residual"] > 0)
  assert r.rate["tanh"][0] < -0.3


def test_compare_remedies_rejects_unknown():
  with pytest.raises(ValueError, match="remedies"):
    ex.compare_remedies("rnn", weight_scales=[1.0], length=4,
                        remedies=["dropout"])
  with pytest.raises(ValueError, match="kind"):
    ex.compare_remedies("cnn", weight_scales=[1.0], length=4)


# Issue 13: activation="relu" turned the "tanh" baseline into ReLU and init=
# replaced its Gaussian init. Refused before any sweep runs.
@pytest.mark.parametrize("kind, kwargs, match", [
    ("rnn", {"activation": "relu"}, "activation"),
    ("rnn", {"init": "orthogonal"}, "init"),
    ("rnn", {"forget_bias": 1.0}, "forget_bias"),
    ("mlp", {"batchnorm": True}, "batchnorm"),
    ("mlp", {"residual": True}, "residual"),
    ("mlp", {"activation": "tanh"}, "activation"),
    ("rnn", {"grid": {"weight_scale": [1.0]}}, "grid"),
    ("rnn", {"remedies": "relu"}, "remedies"),
    ("rnn", {"remedies": [3]}, "remedies"),
    ("rnn", {"remedies": 3}, "remedies"),
])
def test_compare_remedies_refuses_knobs_that_change_the_baseline(
    kind, kwargs, match, monkeypatch):
  def no_sweep(*args, **kwargs):
    raise AssertionError("swept before checking the arguments")

  monkeypatch.setattr(ex, "sweep", no_sweep)
  with pytest.raises(TypeError, match=match):
    ex.compare_remedies(kind, weight_scales=[1.0], length=4, **kwargs)


def test_compare_remedies_baseline_is_the_plain_tanh_net(monkeypatch):
  calls = []

  def record(model, **kwargs):
    calls.append((model, kwargs))
    raise StopIteration   # record the first call (the baseline) only

  monkeypatch.setattr(ex, "sweep", record)
  with pytest.raises(StopIteration):
    ex.compare_remedies("rnn", weight_scales=[1.0], length=4,
                        remedies=["relu"], bias_scale=0.1)
  model, kwargs = calls[0]
  assert model == "rnn"
  assert "activation" not in kwargs and "init" not in kwargs
  assert kwargs["bias_scale"] == 0.1
