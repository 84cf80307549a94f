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
