"""Loads a figure script of ``experiments/`` as a module (once per
process), for tests that check a figure's numbers on its QUICK config."""

import importlib.util
import os
import sys

EXPERIMENTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def load(name: str):
  """``experiments/<name>.py`` as a module, e.g. ``load("fig10_cliff")``."""
  module_name = f"_exploding_experiments_{name}"
  if module_name not in sys.modules:
    spec = importlib.util.spec_from_file_location(
        module_name, os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
  return sys.modules[module_name]


def quick(name: str):
  """``(module, module.compute(module.QUICK))`` for a figure script."""
  module = load(name)
  return module, module.compute(module.QUICK)
