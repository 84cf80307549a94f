"""Shared fixtures. Multi-device tests run in subprocesses (see
``tests/_subprocess.py``) so the rest of the suite sees one CPU device, as a
user does by default."""

import os

import jax
import pytest

# The CLI and the figure runner turn on jax's persistent compilation cache in
# ~/.cache; tests (in-process and their subprocesses) keep out of it, except
# the one test of that cache, which points it at a temporary folder.
os.environ.setdefault("EXPLODING_NO_XLA_CACHE", "1")


@pytest.fixture
def getkey():
  """Returns a function that yields fresh, deterministic PRNG keys."""
  state = {"key": jax.random.key(0)}

  def _getkey():
    state["key"], sub = jax.random.split(state["key"])
    return sub

  return _getkey


@pytest.fixture
def x64():
  """Runs the test body with float64 enabled."""
  with jax.enable_x64(True):
    yield
