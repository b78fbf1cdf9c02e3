"""Exceptions with messages meant for the person at the keyboard.

They follow Python's (and scikit-learn's) conventions as well as carrying the CLI's exit code:
bad input -- an invalid option, request, data set or run directory -- is a ``ValueError``, a
solver that did not converge is a ``RuntimeError``, so ``except ValueError`` in a user's code
catches what it expects.
"""


class MiniUnlearnError(Exception):
    """Base class: a problem the user can fix; the CLI prints it and exits non-zero."""

    exit_code = 2


class DataError(MiniUnlearnError, ValueError):
    """A data set is unknown, missing, malformed or does not match a run."""


class InputError(MiniUnlearnError, ValueError):
    """A request (ids file, option value) is invalid."""


class RunError(MiniUnlearnError, ValueError):
    """A run directory, model or history file is missing, corrupted or incompatible."""


class ConvergenceError(MiniUnlearnError, RuntimeError):
    """A solver did not reach its tolerance, or produced non-finite numbers: nothing was saved as a result."""

    exit_code = 3
