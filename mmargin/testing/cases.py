"""Cases and the pytest helper of the conformance kit: one test per (object, check).

A *case* names one object under test (a space, a distance, an adapter, a loader ...) and
knows how to build it and the inputs its checks need — lazily, once per test session, so
that collecting the tests stays cheap and a dataset is loaded once for all its checks.
:func:`parametrize_with_checks` turns a list of cases into a ``pytest.mark.parametrize``
decorator (as scikit-learn's ``parametrize_with_checks`` does for estimators)::

    @parametrize_with_checks([
        space_case("box", lambda: box(0.0, 1.0, sample_shape=(4,)), lambda: x),
        distance_case("l2", lambda: lp("l2"), shape=(4,)),
    ])
    def test_conformance(case, check):
        check(case)

Every check raises :class:`ConformanceError` (an ``AssertionError``) saying what broke.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmargin.testing.contract import ConformanceError, missing_members, require_protocol

__all__ = ["ConformanceError", "missing_members", "require_protocol"]

KINDS = ("space", "distance", "adapter", "loader", "discrete_space", "edit_distance")
"""The kinds of object the kit checks; each has its list of checks (:func:`checks_for`)."""


@dataclass(eq=False)
class Case:
    """One object under test: ``build()`` returns the positional arguments of its checks.

    ``kind`` selects the checks (:data:`KINDS`); ``name`` is the test id; ``skip`` names
    checks that do not apply, each with the reason (``{"check_space_random": "why"}``).
    The arguments are built on first use and then shared by every check of the case.
    """

    kind: str
    name: str
    build: Callable[[], tuple[Any, ...]]
    skip: dict[str, str] = field(default_factory=dict)
    _built: tuple[Any, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"case {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    def arguments(self) -> tuple[Any, ...]:
        """The built arguments (object first), cached."""
        if self._built is None:
            self._built = tuple(self.build())
        return self._built

    def __repr__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Check:
    """One check bound to nothing: ``check(case)`` runs ``function(*case.arguments())``."""

    function: Callable[..., None]

    @property
    def name(self) -> str:
        """The check function's name (the second half of a test id)."""
        return self.function.__name__

    def __call__(self, case: Case) -> None:
        if self.name in case.skip:
            import pytest

            pytest.skip(f"{self.name} does not apply to {case!r}: {case.skip[self.name]}")
        self.function(*case.arguments())

    def __repr__(self) -> str:
        return self.name


def space_case(
    name: str,
    space: Callable[[], Any],
    inputs: Callable[[], Any],
    *,
    scale: float | None = None,
    skip: dict[str, str] | None = None,
) -> Case:
    """A continuous space and a batch of valid inputs ``(N, ...)`` (N >= 2) to check it on.

    ``scale`` is the size of the random perturbations the checks try (default: from the
    inputs' spread)."""
    return Case("space", name, lambda: (space(), inputs(), scale), dict(skip or {}))


def distance_case(
    name: str,
    distance: Callable[[], Any],
    shape: Sequence[int] = (6,),
    *,
    reference: Callable[[Any], Any] | None = None,
    skip: dict[str, str] | None = None,
) -> Case:
    """A continuous distance, the shape of one sample, and optionally ``reference``: the
    distance's definition as a numpy function ``(B, ...) -> (B,)`` to compare norms with."""
    return Case("distance", name, lambda: (distance(), tuple(shape), reference), dict(skip or {}))


def adapter_case(
    name: str,
    adapter: Callable[[], Any],
    inputs: Callable[[], Any],
    *,
    skip: dict[str, str] | None = None,
) -> Case:
    """A model adapter and a batch it accepts (an array ``(N, ...)`` or a list of texts)."""
    return Case("adapter", name, lambda: (adapter(), inputs()), dict(skip or {}))


def loader_case(
    name: str,
    factory: Callable[..., Any],
    options: dict[str, Any] | None = None,
    *,
    space: Callable[[], Any] | None = None,
    skip: dict[str, str] | None = None,
) -> Case:
    """A loader factory called with ``options`` (keep them small: ``limit``, ``n``...), and
    optionally the space its data must fit."""
    opts = dict(options or {})
    return Case(
        "loader",
        name,
        lambda: (factory, opts, None if space is None else space()),
        dict(skip or {}),
    )


def discrete_case(
    name: str,
    space: Callable[[], Any],
    model: Callable[[], Any],
    inputs: Callable[[], Sequence[Any]],
    *,
    skip: dict[str, str] | None = None,
) -> Case:
    """A discrete (or relaxed) space, the adapter it edits for, and inputs to prepare."""
    return Case(
        "discrete_space", name, lambda: (space(), model(), list(inputs())), dict(skip or {})
    )


def edit_distance_case(
    name: str,
    distance: Callable[[], Any],
    pairs: Callable[[], Sequence[tuple[Any, Any, Sequence[Any]]]],
    *,
    skip: dict[str, str] | None = None,
) -> Case:
    """A distance over discrete edits and ``(x, x_adv, edits)`` triples to measure."""
    return Case("edit_distance", name, lambda: (distance(), list(pairs())), dict(skip or {}))


def checks_for(kind: str) -> tuple[Callable[..., None], ...]:
    """The checks the kit runs on an object of ``kind``."""
    from mmargin.testing import continuous, discrete, models

    table: dict[str, tuple[Callable[..., None], ...]] = {
        "space": continuous.SPACE_CHECKS,
        "distance": continuous.DISTANCE_CHECKS,
        "adapter": models.ADAPTER_CHECKS,
        "loader": discrete.LOADER_CHECKS,
        "discrete_space": discrete.DISCRETE_CHECKS,
        "edit_distance": discrete.EDIT_DISTANCE_CHECKS,
    }
    return table[kind]


def all_checks(cases: Iterable[Case]) -> list[tuple[Case, Check]]:
    """Every (case, check) pair for ``cases``, in order."""
    return [(case, Check(fn)) for case in cases for fn in checks_for(case.kind)]


def parametrize_with_checks(cases: Iterable[Case]) -> Any:
    """A ``pytest.mark.parametrize("case, check", ...)`` decorator: one test per pair,
    with ids ``kind:name-check_name``. The test body is ``check(case)``."""
    import pytest

    pairs = all_checks(cases)
    ids = [f"{case!r}-{check.name}" for case, check in pairs]
    return pytest.mark.parametrize(("case", "check"), pairs, ids=ids)
