"""How messages name things (model/errors.py)."""

import os

import pytest

from model import errors


def test_printable_shows_bytes_that_are_not_utf8_as_escapes():
    assert errors.printable(os.fsdecode(b"a/caf\xe9.png")) == "a/caf\\xe9.png"
    assert errors.printable("a/café.png") == "a/café.png"


def test_a_path_that_is_not_utf8_is_refused_naming_it_escaped():
    errors.check_utf8("/tmp/café")
    with pytest.raises(errors.UserError, match=r"^/tmp/caf\\xe9: the path is not UTF-8"):
        errors.check_utf8(os.fsdecode(b"/tmp/caf\xe9"))


def test_first_names_shows_three_then_an_ellipsis():
    assert errors.first_names(["a", "b"]) == "a, b"
    assert errors.first_names(["a", "b", "c", "d"]) == "a, b, c, ..."
