"""errors.printable and printable_lines (pure): what a message or listing may show of an untrusted value.
The command line's use of them, with a hostile store, is tests/security/test_messages.py."""

from __future__ import annotations

import pytest

from metaflow_repro.errors import VALUE_CHARS, printable, printable_lines


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # a terminal escape
        ("x\ny", "x\\ny"),  # a value never starts a line of its own
        ("tab\tkept", "tab\tkept"),
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),  # bidi override and isolate
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("c1\x9b31m\x7f", "c1\\x9b31m\\x7f"),
        ("sep\u2028ara\u2029tor", "sep\\u2028ara\\u2029tor"),
        ("lone \udcff surrogate", "lone \\udcff surrogate"),
        ("é 日本 ok — fine", "é 日本 ok — fine"),
    ],
)
def test_control_and_invisible_characters_are_escaped_and_the_rest_kept(raw, shown):
    assert printable(raw) == shown


def test_a_long_value_is_cut_saying_its_length():
    assert printable("9" * 2_000_000) == "9" * VALUE_CHARS + "...(2000000 characters)"
    assert printable("x" * 500, 10) == "x" * 10 + "...(500 characters)"
    assert printable("x" * 10, 10) == "x" * 10
    assert printable("\x1b" * 100, 10) == "\\x1b\\x1b\\x...(100 characters)"  # escapes count toward the bound
    assert printable(12345) == "12345"


def test_printable_lines_keeps_lines_and_bounds_each_and_their_number():
    text = printable_lines("\n".join(f"line {i}\x1b" for i in range(500)), line_limit=50, max_lines=3)
    assert text == "line 0\\x1b\nline 1\\x1b\nline 2\\x1b\n...and 497 more lines"
    assert printable_lines("a\n" + "b" * 60, line_limit=50) == "a\n" + "b" * 50 + "...(60 characters)"
    assert printable_lines("one\r\nfake line") == "one\\r\nfake line"
