"""Tests for exploding.tasks: shapes, determinism, exact oracles."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exploding import tasks

_GENERATORS = [
    (tasks.adding_problem, 2, 1),
    (tasks.recall_task, 1, 1),
    (tasks.temporal_order, 6, 4),
]


@pytest.mark.parametrize("gen, input_size, target_size", _GENERATORS)
def test_shapes_and_determinism(gen, input_size, target_size):
  k = jax.random.key(3)
  t = gen(16, 40, key=k, lag=30)
  assert t.inputs.shape == (16, 40, input_size)
  assert t.targets.shape == (16, target_size)
  assert t.inputs.dtype == jnp.float32 and t.targets.dtype == jnp.float32
  again = gen(16, 40, key=k, lag=30)
  np.testing.assert_array_equal(t.inputs, again.inputs)
  np.testing.assert_array_equal(t.targets, again.targets)
  other = gen(16, 40, key=jax.random.key(4), lag=30)
  assert not np.array_equal(t.inputs, other.inputs)


def test_float64(x64):
  t = tasks.adding_problem(4, 10, key=jax.random.key(0), dtype=jnp.float64)
  assert t.inputs.dtype == jnp.float64 and t.targets.dtype == jnp.float64
  # Drawn in float32 and cast: the same data in every dtype.
  t32 = tasks.adding_problem(4, 10, key=jax.random.key(0), dtype=jnp.float32)
  np.testing.assert_array_equal(t.inputs, t32.inputs.astype(jnp.float64))


@pytest.mark.parametrize("lag", [1, 25, 63])
def test_adding_oracle(lag):
  length = 64
  t = tasks.adding_problem(256, length, key=jax.random.key(1), lag=lag)
  values, markers = np.asarray(t.inputs[..., 0]), np.asarray(t.inputs[..., 1])
  assert set(np.unique(markers)) <= {0.0, 1.0}
  np.testing.assert_array_equal(markers.sum(axis=1), 2.0)
  first = np.argmax(markers > 0, axis=1)
  assert np.all(length - 1 - first >= lag)
  if lag == length - 1:
    assert np.all(first == 0)
  np.testing.assert_allclose(t.targets[:, 0], (values * markers).sum(axis=1),
                             rtol=1e-6)
  assert t.baseline_loss == pytest.approx(1 / 6)


def test_adding_baseline_matches_data():
  t = tasks.adding_problem(4096, 20, key=jax.random.key(2))
  mse = float(jnp.mean((t.targets - 1.0)**2))
  assert mse == pytest.approx(t.baseline_loss, rel=0.1)


@pytest.mark.parametrize("lag", [0, 7, 49])
def test_recall_oracle(lag):
  t = tasks.recall_task(32, 50, key=jax.random.key(0), lag=lag)
  np.testing.assert_array_equal(t.targets[:, 0], t.inputs[:, 49 - lag, 0])
  assert t.baseline_loss == pytest.approx(1 / 12)


@pytest.mark.parametrize("lag", [1, 20, 39])
def test_temporal_order_oracle(lag):
  length = 40
  t = tasks.temporal_order(512, length, key=jax.random.key(5), lag=lag)
  inputs = np.asarray(t.inputs)
  np.testing.assert_array_equal(inputs.sum(-1), 1.0)
  symbols = inputs.argmax(-1)
  for row, label in zip(symbols, np.asarray(t.targets).argmax(-1)):
    where = np.flatnonzero(row < 2)
    assert len(where) == 2
    assert length - 1 - where[0] >= lag
    assert label == 2 * row[where[0]] + row[where[1]]
  counts = np.bincount(np.asarray(t.targets).argmax(-1), minlength=4)
  assert counts.min() > 80  # all four classes present, roughly balanced
  assert t.baseline_loss == pytest.approx(math.log(4))


def test_bad_arguments():
  k = jax.random.key(0)
  with pytest.raises(ValueError, match="lag"):
    tasks.adding_problem(4, 10, key=k, lag=10)
  with pytest.raises(ValueError, match="lag"):
    tasks.adding_problem(4, 10, key=k, lag=0)
  with pytest.raises(ValueError, match="lag"):
    tasks.recall_task(4, 10, key=k, lag=-1)
  with pytest.raises(TypeError, match="lag"):
    tasks.temporal_order(4, 10, key=k, lag=2.5)
  with pytest.raises(ValueError, match="length"):
    tasks.adding_problem(4, 1, key=k)
  with pytest.raises(ValueError, match="batch"):
    tasks.recall_task(0, 10, key=k, lag=1)
  with pytest.raises(TypeError, match="dtype"):
    tasks.recall_task(2, 10, key=k, lag=1, dtype=jnp.int32)
