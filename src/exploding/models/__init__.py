"""Pure-functional models: each is a transition ``f(state, x) -> state``."""

from exploding.models import lstm, mlp, rnn
