"""Bounded decoding (issue 22 item 8): the depth limit is exact, a deep document never reaches Python's
recursion limit, and every refusal is ``Invalid`` naming the document."""

from __future__ import annotations

import pytest

from metaflow_repro.model import validate as v


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_the_depth_limit_is_exact():
    assert v.load_json(_nested(v.MAX_DEPTH), v.At("doc")) is not None
    with pytest.raises(v.Invalid, match=f"doc: not a JSON document \\(nested deeper than {v.MAX_DEPTH} levels\\)"):
        v.load_json(_nested(v.MAX_DEPTH + 1), v.At("doc"))


def test_tables_count_as_levels_too():
    assert not v.too_deep({"a": {"b": [1]}}, 3)
    assert v.too_deep({"a": {"b": [1]}}, 2)
    assert not v.too_deep("scalar", 0)


@pytest.mark.parametrize("data", [b"\xff\xfe", b"{", "[1,]", "[" * 100000])
def test_anything_else_is_invalid_never_another_error(data):
    with pytest.raises(v.Invalid) as info:
        v.load_json(data, v.At("store/x.json"), "a lease")
    assert str(info.value).startswith("store/x.json: not a lease")


@pytest.mark.parametrize("text", ["a = [" + "[" * 100, "a = " + "{b = " * 100000, "a = ["])
def test_toml_is_bounded_too(text):
    with pytest.raises(v.Invalid, match="lock.toml: not a lock"):
        v.load_toml(text, v.At("lock.toml"), "a lock")


def test_the_size_is_checked_before_decoding():
    with pytest.raises(v.Invalid, match="a record of 11 bytes is larger than 10 bytes"):
        v.load_json(b'"123456789"', v.At("r"), "a record", max_bytes=10)
    assert v.load_json(b'"12345678"', v.At("r"), "a record", max_bytes=10) == "12345678"
