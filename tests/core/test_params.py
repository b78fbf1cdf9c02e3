"""Declarative option validation: ranges, conversions and messages."""

from numbers import Integral, Real

import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.core.params import Boolean, Interval, Options, Param, Text, param_help, validate_params

PARAMS = {
    "refine": Param(0, Interval(Integral, 0, 100), help="passes"),
    "lr": Param(None, Interval(Real, 0, 100, closed="right"), None, help="step"),
    "kind": Param("linear", Options(("linear", "constant"))),
    "path": Param(None, Text(), None),
}


def test_defaults_are_filled_in_and_values_converted():
    assert validate_params("m", PARAMS, {}) == {"refine": 0, "lr": None, "kind": "linear", "path": None}
    out = validate_params("m", PARAMS, {"refine": 5.0, "lr": 3, "path": "a.csv"})
    assert out["refine"] == 5 and isinstance(out["refine"], int)
    assert out["lr"] == 3.0 and isinstance(out["lr"], float)


@pytest.mark.parametrize("values, message", [
    ({"refine": 1_000_000}, r"option refine must be an integer in \[0, 100\], got 1000000"),
    ({"refine": 1.5}, "option refine must be an integer"),
    ({"refine": True}, "option refine must be an integer"),
    ({"refine": -1}, "option refine must be"),
    ({"lr": 1e9}, r"option lr must be a finite number in \(0, 100\] or None, got 1000000000.0"),
    ({"lr": 0}, "option lr must be"),
    ({"lr": float("inf")}, "option lr must be"),
    ({"lr": float("nan")}, "option lr must be"),
    ({"lr": "fast"}, "option lr must be"),
    ({"kind": "cosine"}, "option kind must be one of 'linear', 'constant', got 'cosine'"),
    ({"path": ""}, "option path must be a non-empty string or None"),
    ({"colour": 1}, "m has no option colour; its options: kind, lr, path, refine"),
])
def test_bad_values_are_refused_with_a_message_that_names_them(values, message):
    with pytest.raises(InputError, match=message):
        validate_params("m", PARAMS, values)


def test_interval_ends():
    closed_left = Interval(Real, 0, 1, closed="left")
    assert closed_left.convert(0) == (True, 0.0) and closed_left.convert(1)[0] is False
    neither = Interval(Integral, 0, 10, closed="neither")
    assert neither.convert(0)[0] is False and neither.convert(10)[0] is False and neither.convert(5) == (True, 5)
    assert str(neither) == "an integer in (0, 10)"
    assert str(Interval(Real, None, 3)) == "a finite number in (-inf, 3]"


def test_help_lists_default_allowed_values_and_text():
    assert param_help(PARAMS)["lr"] == {"default": None, "allowed": "a finite number in (0, 100] or None",
                                        "help": "step"}


def test_booleans_accept_the_words_a_command_line_gives():
    spec = {"flag": Param(False, Boolean())}
    for given, expected in (("True", True), ("false", False), (1, True), (0, False), (True, True)):
        assert validate_params("m", spec, {"flag": given}) == {"flag": expected}
    for bad in ("yes", 2, 0.5, None):
        with pytest.raises(InputError, match="flag"):
            validate_params("m", spec, {"flag": bad})
