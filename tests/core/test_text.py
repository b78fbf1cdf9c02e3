"""Parsing what people type: specs, key=value options, byte sizes."""

import pytest

from miniunlearn.core.errors import InputError
from miniunlearn.core.text import coerce_scalar, parse_bytes, parse_key_values, parse_spec, slug


def test_specs_split_into_a_name_and_typed_options():
    assert parse_spec("synthetic:n_samples=10,separation=0.5") == ("synthetic", {"n_samples": 10, "separation": 0.5})
    assert parse_spec(" mini ") == ("mini", {})
    assert parse_spec("csv:path=/a/b.csv,target=label") == ("csv", {"path": "/a/b.csv", "target": "label"})
    with pytest.raises(InputError, match="empty"):
        parse_spec("  ")
    with pytest.raises(InputError, match="should look like key=value"):
        parse_spec("x:novalue")


def test_key_values_coerce_numbers_none_and_dashes():
    assert parse_key_values(["a=1", "b-c=2.5", "d=none", "e=text", "f=1e-3"], "--set") == {
        "a": 1, "b_c": 2.5, "d": None, "e": "text", "f": 0.001}
    assert coerce_scalar("007") == 7 and coerce_scalar("nan") != coerce_scalar("nan")  # float nan, refused later
    with pytest.raises(InputError, match="--set '=3' should look like key=value"):
        parse_key_values(["=3"], "--set")


@pytest.mark.parametrize("text, size", [("4GiB", 4 << 30), ("500MB", 500_000_000), ("1024", 1024),
                                        ("1.5 KiB", 1536), ("2e3", 2000)])
def test_byte_sizes(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["-1GiB", "4 GB of RAM", "lots", "1e30TiB"])
def test_bad_byte_sizes_are_refused(text):
    with pytest.raises(InputError):
        parse_bytes(text)


def test_slug_keeps_file_safe_characters_only():
    assert slug("synthetic:n_samples=4000,seed=0") == "synthetic-n_samples-4000-seed-0"
    assert slug("HIGGS-shaped synthetic (1M x 28, binary)") == "HIGGS-shaped-synthetic--1M-x-28--binary"
