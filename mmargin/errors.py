"""Exceptions raised by mmargin.

They subclass built-ins so callers can catch them as ``ValueError`` etc.; every message
names the thing that was wrong, what was expected and what was got.
"""

from __future__ import annotations


class MmarginError(Exception):
    """Base class of every error mmargin raises on purpose."""


class InvalidTaskError(MmarginError, ValueError):
    """A task file (or its Python equivalent) is malformed.

    ``field`` is the dotted path of the offending entry (``search.budget``) so the CLI can
    print one line that names it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidInputError(MmarginError, ValueError):
    """An input batch cannot be searched: wrong shape, NaN/inf, outside the declared bounds."""


class PluginError(MmarginError, RuntimeError):
    """A plugin is broken: a duplicate name, a misspelled hook, a factory that fails."""


class ModelError(MmarginError, RuntimeError):
    """The model raised or returned something unusable (NaN, wrong shape) for a batch."""


class RunError(MmarginError, RuntimeError):
    """A mistake that dooms every sample, so the run stops instead of recording errors.

    Raised on the first batch (a model that expects 5 features given 9, a normalisation of
    the wrong length, a target class the model does not have) or before it (a device that
    does not exist); the CLI prints the message as one line and exits with status 2.
    """
