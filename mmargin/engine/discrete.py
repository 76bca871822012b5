"""Old import path of the discrete types, kept while plugins move to :mod:`mmargin.plugin`.

The records live in :mod:`mmargin.protocols`, the search knobs in
:mod:`mmargin.engine.spec`, the strategy in :mod:`mmargin.engine.discrete_strategy`.
"""

from __future__ import annotations

from mmargin.engine.spec import ORDERS, DiscreteConfig
from mmargin.protocols import DiscreteProblem, DiscreteSpace, Edit, Found, ProblemBase, Ranking

__all__ = ["ORDERS", "DiscreteConfig", "DiscreteProblem", "DiscreteSpace", "Edit", "Found",
           "ProblemBase", "Ranking"]  # fmt: skip
