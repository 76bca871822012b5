"""The one MILP builder every exact method uses: named variable blocks and named rows.

A model is built block by block — ``x`` (the perturbed input), ``dp``/``dm`` or ``t`` (the
norm), ``relu1.a``/``relu1.s`` (a ReLU layer's outputs and switches), ``leaf`` variables,
``flip.select`` ... — with :meth:`MilpBuilder.add` returning the indices of a block and
:meth:`MilpBuilder.block` finding them again by name. Rows are added as sparse products of
coefficient matrices with blocks (:meth:`MilpBuilder.rows`) or as ``{index: coefficient}``
maps (:meth:`MilpBuilder.row`), each under a name for reports. :meth:`MilpBuilder.solve`
runs HiGHS through :func:`scipy.optimize.milp` with :data:`mmargin.exact.limits.LIMITS`
and returns a :class:`Solution` that reads values back by block name.

The reusable blocks (input perturbation and its norm, ReLU units, flip conditions, tree
leaves) live in :mod:`mmargin.exact.blocks`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmargin.exact.limits import LIMITS, ExactLimits

Terms = Sequence[tuple[Any, np.ndarray]]
"""``[(M, idx), ...]``: the rows ``sum_k M_k @ v[idx_k]``; a 1-D ``M_k`` means ``diag(M_k)``."""


@dataclass
class Solution:
    """What HiGHS returned: ``status`` (0 optimal, 1 time/iteration limit, 2 infeasible),
    the point ``x`` (``None`` without an incumbent), objective ``value`` (with the model's
    constant offset), proven ``bound`` (``None`` when unknown) and ``nodes``."""

    status: int
    x: np.ndarray | None
    value: float
    bound: float | None
    nodes: int
    message: str
    blocks: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        """The solved values of block ``name``."""
        assert self.x is not None, "no incumbent"
        return np.asarray(self.x[self.blocks[name]])


class MilpBuilder:
    """A sparse MILP under construction: named variable blocks, named rows, an objective.

    Variables have bounds, a cost and an integrality flag; the objective is
    ``cost @ v + offset`` (``offset``: constants that HiGHS need not see).
    """

    def __init__(self) -> None:
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._cost: list[np.ndarray] = []
        self._integer: list[np.ndarray] = []
        self.n = 0
        self.blocks: dict[str, np.ndarray] = {}
        self._trip: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._rlo: list[np.ndarray] = []
        self._rhi: list[np.ndarray] = []
        self.m = 0
        self.row_names: dict[str, int] = {}
        self.offset = 0.0

    # -- variables ------------------------------------------------------------------------
    def add(self, name: str, n: int, lb: Any = 0.0, ub: Any = math.inf, cost: Any = 0.0,
            integer: Any = False) -> np.ndarray:  # fmt: skip
        """Add block ``name`` of ``n`` variables (bounds, costs, integrality broadcast);
        returns its indices. A name used twice is an error (blocks are found by name)."""
        if name in self.blocks:
            raise ValueError(f"MILP block {name!r} exists already")
        self._lb.append(np.broadcast_to(np.asarray(lb, dtype=np.float64), (n,)).copy())
        self._ub.append(np.broadcast_to(np.asarray(ub, dtype=np.float64), (n,)).copy())
        self._cost.append(np.broadcast_to(np.asarray(cost, dtype=np.float64), (n,)).copy())
        self._integer.append(np.broadcast_to(np.asarray(integer, dtype=bool), (n,)).copy())
        idx = np.arange(self.n, self.n + n)
        self.n += n
        self.blocks[name] = idx
        return idx

    def block(self, name: str) -> np.ndarray:
        """The indices of block ``name``."""
        return self.blocks[name]

    def _where(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated arrays' positions of global indices ``idx`` (per-block arrays)."""
        starts = np.cumsum([0] + [a.size for a in self._lb])
        blk = np.searchsorted(starts, idx, side="right") - 1
        return blk, idx - starts[blk]

    def add_cost(self, idx: np.ndarray, cost: Any) -> None:
        """Add ``cost`` (broadcast) to the objective coefficients of variables ``idx``."""
        idx = np.atleast_1d(np.asarray(idx))
        costs = np.broadcast_to(np.asarray(cost, dtype=np.float64), idx.shape)
        for (b, k), c in zip(zip(*self._where(idx), strict=True), costs, strict=True):
            self._cost[b][k] += c

    def set_integer(self, idx: np.ndarray) -> None:
        """Make variables ``idx`` integral."""
        for b, k in zip(*self._where(np.atleast_1d(np.asarray(idx))), strict=True):
            self._integer[b][k] = True

    # -- rows -----------------------------------------------------------------------------
    def rows(self, name: str, terms: Terms, lo: Any, hi: Any) -> None:
        """Add rows ``lo <= sum_k M_k @ v[idx_k] <= hi`` under ``name``."""
        nrows = 0
        for mat, idx in terms:
            m = sp.coo_matrix(mat if sp.issparse(mat) or np.ndim(mat) != 1 else sp.diags(mat))
            nrows = m.shape[0]
            self._trip.append((m.row + self.m, np.asarray(idx)[m.col], m.data))
        self._push(name, nrows, lo, hi)

    def row(self, name: str, terms: dict[int, float], lo: float, hi: float) -> None:
        """Add one row ``lo <= sum coef · v[index] <= hi`` from an ``{index: coef}`` map."""
        keys = np.fromiter(terms.keys(), dtype=np.int64, count=len(terms))
        vals = np.fromiter(terms.values(), dtype=np.float64, count=len(terms))
        self._trip.append((np.full(keys.size, self.m), keys, vals))
        self._push(name, 1, lo, hi)

    def _push(self, name: str, nrows: int, lo: Any, hi: Any) -> None:
        self._rlo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (nrows,)))
        self._rhi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (nrows,)))
        self.m += nrows
        self.row_names[name] = self.row_names.get(name, 0) + nrows

    # -- solving --------------------------------------------------------------------------
    def solve(self, time_limit: float | None = None, limits: ExactLimits = LIMITS) -> Solution:
        """Run HiGHS (quietly) within ``time_limit`` seconds (default ``limits.time_limit``)."""
        from scipy.optimize import Bounds, LinearConstraint, milp

        if self._trip:
            r, c, v = (np.concatenate([t[k] for t in self._trip]) for k in range(3))
        else:
            r = c = np.zeros(0, dtype=np.int64)
            v = np.zeros(0)
        a = sp.csr_matrix((v, (r, c)), shape=(self.m, self.n))
        limit = limits.time_limit if time_limit is None else time_limit
        options = {
            "time_limit": max(float(limit), 1e-3),
            "mip_rel_gap": limits.mip_rel_gap,
            "mip_abs_gap": limits.mip_abs_gap,
            "mip_feasibility_tolerance": limits.feasibility_tol,
            "primal_feasibility_tolerance": limits.feasibility_tol,
            "disp": False,
        }
        constraints = LinearConstraint(a, np.concatenate(self._rlo), np.concatenate(self._rhi)) \
            if self.m else ()  # fmt: skip
        with warnings.catch_warnings(), quiet_stdout():
            warnings.filterwarnings("ignore", message="Unrecognized options")
            res: Any = milp(
                np.concatenate(self._cost),
                integrality=np.concatenate(self._integer).astype(int),
                bounds=Bounds(np.concatenate(self._lb), np.concatenate(self._ub)),
                constraints=constraints,
                options=options,
            )
        dual = res.get("mip_dual_bound")
        bound = float(dual) + self.offset if dual is not None and math.isfinite(dual) else None
        if bound is None and res.status == 0 and res.x is not None:
            bound = float(res.fun) + self.offset
        value = float(res.fun) + self.offset if res.x is not None else math.inf
        return Solution(int(res.status), None if res.x is None else np.asarray(res.x), value,
                        bound, int(res.get("mip_node_count") or 0), str(res.message),
                        dict(self.blocks))  # fmt: skip


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 for a block (HiGHS's native code prints debug lines)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real stdout (some notebook / service setups)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
