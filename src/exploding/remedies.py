"""Remedies measured on one grid: where each moves the edge of chaos.

Each remedy for vanishing and exploding gradients is a change of the
transition: another nonlinearity (ReLU's unit slope, Glorot et al. 2011),
orthogonal weights (Saxe et al. 2014), batch norm (Ioffe & Szegedy 2015),
residual connections (He et al. 2016), gating (the LSTM's additive cell,
Hochreiter & Schmidhuber 1997). ``compare_remedies`` sweeps the plain tanh
network and each variant over the same weight scales, seeds and length, and
reports each map's critical scale and rate, so the claim "remedy X helps"
becomes "remedy X moves the vanishing/exploding boundary from g_c to g_c'".

References:
  Pascanu, Mikolov, Bengio. On the difficulty of training recurrent neural
  networks. ICML 2013.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from exploding import _validation
from exploding.maps import GradientMap

__all__ = ["RemedyComparison", "compare_remedies", "REMEDIES"]


def __dir__():
  # dir() and tab completion show the public API, not the imports behind it.
  return list(__all__)


# name -> (model, sweep keyword arguments) applied over the plain tanh net.
REMEDIES: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "rnn": {
        "tanh": ("rnn", {}),
        "relu": ("rnn", {"activation": "relu"}),
        "orthogonal": ("rnn", {"init": "orthogonal"}),
        "lstm b_f=0": ("lstm", {"forget_bias": 0.0}),
        "lstm b_f=1": ("lstm", {"forget_bias": 1.0}),
        "lstm b_f=3": ("lstm", {"forget_bias": 3.0}),
    },
    "mlp": {
        "tanh": ("mlp", {}),
        "relu": ("mlp", {"activation": "relu"}),
        "batchnorm": ("mlp", {"batchnorm": True}),
        "residual": ("mlp", {"residual": True}),
        "orthogonal": ("mlp", {"init": "orthogonal"}),
    },
}

# The knobs the remedies turn. Passed to every sweep they would change the
# baseline too (activation="relu" made the "tanh" net a ReLU net), so
# compare_remedies refuses them; sweep such a variant with ``ex.sweep``.
_REMEDY_KNOBS = sorted({knob for table in REMEDIES.values()
                        for _, extra in table.values() for knob in extra})


class RemedyComparison(NamedTuple):
  """Attributes:
    maps: remedy name -> ``GradientMap`` (same grid for all).
    critical_scale: name -> weight scale where the rate crosses zero (NaN:
      never in the grid, e.g. gradients vanish at every scale).
    rate: name -> ``(n_scales,)`` mean log growth per step.
    shift: name -> critical scale minus the plain tanh net's.
  """

  maps: dict[str, GradientMap]
  critical_scale: dict[str, float]
  rate: dict[str, np.ndarray]
  shift: dict[str, float]


def compare_remedies(kind: str = "rnn", *, weight_scales: Any, length: int,
                     seeds: int = 4, hidden: int = 64,
                     remedies: list[str] | None = None, key: Any = 0,
                     **sweep_kwargs) -> RemedyComparison:
  """Sweeps the plain tanh net and each remedy on one grid.

  Args:
    kind: ``"rnn"`` (remedies tanh, relu, orthogonal, lstm b_f = 0, 1, 3)
      or ``"mlp"`` (tanh, relu, batchnorm, residual, orthogonal).
    weight_scales: ``(n_scales,)`` scales shared by every map.
    length: steps (or depth for an MLP).
    seeds, hidden, key: as in ``sweep`` (``hidden`` is the MLP's width).
    remedies: a list of names above (default: all); the baseline
      ``"tanh"`` (tanh, Gaussian init; a plain RNN or MLP) is always swept.
    **sweep_kwargs: passed to every sweep (e.g. ``batch``, ``method``,
      ``bias_scale``, ``progress``); not the knobs the remedies turn
      (``activation``, ``init``, ``forget_bias``, ``batchnorm``,
      ``residual``), which would change the baseline too.

  Returns:
    ``RemedyComparison``.

  Raises:
    TypeError: a remedy knob or ``grid`` in ``sweep_kwargs``, or
      ``remedies`` not a list of names; before any sweep.
    ValueError: unknown ``kind`` or remedy name (and what ``sweep``
      rejects, before it computes).

  Example:
    >>> import exploding as ex
    >>> r = ex.compare_remedies("rnn", weight_scales=[0.5, 1.0, 2.0],
    ...                         length=32, seeds=1, hidden=16,
    ...                         remedies=["tanh", "relu"], progress=False)
    >>> sorted(r.maps)
    ['relu', 'tanh']
  """
  import exploding as ex   # the package's sweep (a cycle at import time)
  _validation.check_choice("kind", kind, REMEDIES)
  for name in sweep_kwargs:
    if name in _REMEDY_KNOBS or name == "grid":
      raise TypeError(
          f"compare_remedies() does not take {name}=: "
          + ("the grid is weight_scales" if name == "grid" else
             f"the remedies set {', '.join(_REMEDY_KNOBS)} themselves and "
             f"the baseline 'tanh' is a tanh net with Gaussian init; sweep "
             f"another variant with ex.sweep({kind!r}, {name}=...)"))
  table = REMEDIES[kind]
  try:
    names = list(table if remedies is None else remedies)
  except TypeError:
    names = None
  if (isinstance(remedies, str) or names is None
      or not all(isinstance(n, str) for n in names)):
    raise TypeError(f"remedies must be a list of names from {list(table)}, "
                    f"got {remedies!r}")
  for name in names:
    _validation.check_choice("remedies", name, table)
  if "tanh" not in names:
    names.insert(0, "tanh")
  maps = {}
  for name in names:
    model, extra = table[name]
    kwargs = {**sweep_kwargs, **extra}
    if model != "mlp":
      kwargs.pop("batch", None)
    maps[name] = ex.sweep(model, weight_scales=weight_scales, length=length,
                          seeds=seeds, hidden=hidden, key=key, **kwargs)
  crit = {n: m.critical_scale() for n, m in maps.items()}
  return RemedyComparison(
      maps=maps, critical_scale=crit,
      rate={n: m.rate() for n, m in maps.items()},
      shift={n: c - crit["tanh"] for n, c in crit.items()})
