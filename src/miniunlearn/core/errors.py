"""Exceptions with messages meant for the person at the keyboard."""


class MiniUnlearnError(Exception):
    """Base class: a problem the user can fix; the CLI prints it and exits non-zero."""

    exit_code = 2


class DataError(MiniUnlearnError):
    """A data set is unknown, missing, malformed or does not match a run."""


class InputError(MiniUnlearnError):
    """A request (ids file, option value) is invalid."""


class RunError(MiniUnlearnError):
    """A run directory, model or history file is missing, corrupted or incompatible."""


class ConvergenceError(MiniUnlearnError):
    """A solver did not reach its tolerance, or produced non-finite numbers: nothing was saved as a result."""

    exit_code = 3
