"""Declarative option validation, in the spirit of scikit-learn's ``_parameter_constraints``.

Every configurable object (unlearning methods, the training configuration, dataset loaders, the
benchmark) declares its options once, as a mapping from name to :class:`Param` -- a default, the
constraints a value must satisfy (at least one of them) and a line of help -- and validates
values with :func:`validate_params`. A value that satisfies no constraint is refused with one
message that names the option, what it must be and what it got; every numeric option has an
upper limit too, so that ``refine=1000000`` or ``lr=1e9`` is an error, not hours of work or a
model of infinities.

Values may arrive as strings' parsed forms from the command line (``--set epochs=5.0``):
integral floats are accepted where an integer is asked for and converted.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from miniunlearn.core.errors import InputError

__all__ = ["Interval", "Options", "Boolean", "Text", "Param", "validate_params", "describe", "param_help"]

_CLOSED = ("both", "left", "right", "neither")


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (``numbers.Integral`` or ``numbers.Real``) in an interval.

    ``closed`` says which ends belong to it. Reals must be finite; integral floats satisfy an
    integer interval and are converted to ``int``; booleans are never numbers here.
    """

    kind: type
    left: float | None
    right: float | None
    closed: str = "both"

    def __post_init__(self):
        if self.kind not in (numbers.Integral, numbers.Real):
            raise TypeError("Interval kind must be numbers.Integral or numbers.Real")
        if self.closed not in _CLOSED:
            raise TypeError(f"closed must be one of {_CLOSED}")

    def convert(self, value: Any) -> tuple[bool, Any]:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False, None
        number = float(value)
        if not math.isfinite(number):
            return False, None
        if self.kind is numbers.Integral:
            if isinstance(value, numbers.Integral):
                number = int(value)
            elif number.is_integer():
                number = int(number)
            else:
                return False, None
        if self.left is not None:
            if number < self.left or (number == self.left and self.closed in ("right", "neither")):
                return False, None
        if self.right is not None:
            if number > self.right or (number == self.right and self.closed in ("left", "neither")):
                return False, None
        return True, number

    def __str__(self) -> str:
        what = "an integer" if self.kind is numbers.Integral else "a finite number"
        left = "-inf" if self.left is None else format(self.left, "g")
        right = "inf" if self.right is None else format(self.right, "g")
        lo = "[" if self.closed in ("both", "left") and self.left is not None else "("
        hi = "]" if self.closed in ("both", "right") and self.right is not None else ")"
        return f"{what} in {lo}{left}, {right}{hi}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of strings."""

    choices: tuple[str, ...]

    def convert(self, value: Any) -> tuple[bool, Any]:
        return (True, value) if isinstance(value, str) and value in self.choices else (False, None)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclass(frozen=True)
class Text:
    """Any non-empty string (a path, a column name)."""

    def convert(self, value: Any) -> tuple[bool, Any]:
        return (True, value) if isinstance(value, str) and value else (False, None)

    def __str__(self) -> str:
        return "a non-empty string"


@dataclass(frozen=True)
class Boolean:
    """True or False (also numpy booleans, and the integers 0 and 1 and the words true and false in
    any case, as the command line and method specs give them)."""

    WORDS = {"true": True, "false": False}

    def convert(self, value: Any) -> tuple[bool, Any]:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return True, bool(value)
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return True, bool(value)
        if isinstance(value, str) and value.strip().lower() in self.WORDS:
            return True, self.WORDS[value.strip().lower()]
        return False, None

    def __str__(self) -> str:
        return "True or False"


@dataclass(frozen=True)
class Param:
    """An option: its default, the constraints a value must meet (any one), and a line of help.

    ``None`` among the constraints means the value ``None`` is allowed (it then usually means
    "choose automatically", which the help should say).
    """

    default: Any
    constraints: tuple = ()
    help: str = ""

    def __init__(self, default: Any, *constraints, help: str = ""):  # noqa: A002 - "help" reads best here
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "constraints", tuple(constraints))
        object.__setattr__(self, "help", help)

    def convert(self, owner: str, name: str, value: Any) -> Any:
        for constraint in self.constraints:
            if constraint is None:
                if value is None:
                    return None
                continue
            ok, converted = constraint.convert(value)
            if ok:
                return converted
        raise InputError(f"{owner}: option {name} must be {describe(self.constraints)}, got {value!r}")


def describe(constraints: Iterable) -> str:
    """The constraints in words: ``an integer in [1, 100] or None``."""
    return " or ".join("None" if c is None else str(c) for c in constraints)


def validate_params(owner: str, params: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` against ``params``; return every option, defaults filled in, converted.

    Unknown names are refused with the list of known ones.
    """
    unknown = sorted(set(values) - set(params))
    if unknown:
        known = ", ".join(sorted(params)) or "none"
        raise InputError(f"{owner} has no option {', '.join(unknown)}; its options: {known}")
    out = {}
    for name, param in params.items():
        out[name] = param.convert(owner, name, values[name]) if name in values else param.default
    return out


def param_help(params: Mapping[str, Param]) -> dict[str, dict]:
    """``{name: {"default", "allowed", "help"}}`` for ``methods``, ``data list`` and their ``--json``."""
    return {name: {"default": p.default, "allowed": describe(p.constraints), "help": p.help}
            for name, p in params.items()}
