"""Checked reading of untrusted documents (records, locks, store objects). Pure.

Every decoder walks its document with an ``At`` (the document, plus the field path inside it)
and reads fields through these helpers, so every refusal names the document, the field path
(``steps.start.tasks.-.artifacts.x.sha1``) and the bad value, in one wording everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NoReturn, TypeVar, cast

from metaflow_repro._toml import tomllib
from metaflow_repro.errors import BadInput

T = TypeVar("T")
E = TypeVar("E", bound=Enum)

_HEX = {n: re.compile(rf"^[0-9a-f]{{{n}}}$") for n in (32, 40, 64)}
#: a Python identifier (ASCII): flow and step names
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: a name that may become one path component: run ids, task ids, artifact names, platforms
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
#: a flow parameter's name (Metaflow allows dashes)
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: a package file name: becomes a path component in caches and stores
FILE_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+\-]*$")
#: a package name as a lock holds it: PyPI (PEP 508: letters, digits, ``._-``, alphanumeric first and
#: last) or conda (the same, plus a leading ``_``: ``_libgcc_mutex``); it is written into uv's files
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,198}[A-Za-z0-9])?$")
#: an exact version as a lock holds it: PEP 440 (``1!2.0.post1+local.3``) or conda (``1.1.1w``,
#: ``4.5_1``); no spaces, specifiers, wildcards, markers or URLs (it is written after ``==``)
PACKAGE_VERSION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+!-]{0,126}[A-Za-z0-9])?$")


class Invalid(BadInput):
    """A field of an untrusted document is missing, of the wrong type or malformed."""

    def __init__(self, at: At, value: Any, message: str):
        super().__init__(f"{at.where}: {message}" if at.where else message)
        self.where, self.path, self.value = at.where, at.path, value


@dataclass(frozen=True)
class At:
    """Where a value sits: the document (a file, a store key) and the field path inside it."""

    where: str
    path: str = ""

    def __truediv__(self, key: object) -> At:
        return At(self.where, f"{self.path}.{key}" if self.path else str(key))

    @property
    def field(self) -> str:
        return f"'{self.path}'" if self.path else "the document"

    def fail(self, value: Any, what: str) -> NoReturn:
        """Refuse ``value``: it is not ``what`` (e.g. "64 hex digits")."""
        subject = f"{self.field} {short(value)}" if self.path else short(value)
        raise Invalid(self, value, f"{subject} is not {what}")


_TYPE_NAMES = {
    str: "str",
    int: "int",
    float: "a number",
    bool: "bool",
    dict: "a table/object",
    list: "a list",
    type(None): "null",
}


def of_type(value: Any, typ: type | tuple[type, ...], at: At) -> Any:
    """``value`` if it is a ``typ`` (bool is never an int or a number here), else refuse it."""
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types and int not in types:
        types = (*types, int)  # JSON writes 1.0 as 1 in some encoders
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise Invalid(at, value, f"{at.field} must be {names}, got {short(value)}")
    return value


def need(table: dict[str, Any], key: str, typ: type | tuple[type, ...], at: At) -> Any:
    """``table[key]``, which must exist and be a ``typ``."""
    if key not in table:
        raise Invalid(at / key, None, f"missing key '{(at / key).path}'")
    return of_type(table[key], typ, at / key)


def opt(table: dict[str, Any], key: str, typ: type | tuple[type, ...], default: Any, at: At) -> Any:
    """``table[key]`` if present (then it must be a ``typ``), else ``default``."""
    return of_type(table[key], typ, at / key) if key in table else default


def only(table: dict[str, Any], keys: set[str] | frozenset[str], at: At) -> dict[str, Any]:
    """Refuse keys this reader does not know (a newer writer must bump the schema version)."""
    for key in table:
        if key not in keys:
            raise Invalid(at / key, key, f"unknown key '{(at / key).path}'")
    return table


def hex_digest(value: Any, n: int, at: At) -> str:
    """A lowercase hex digest of ``n`` digits (32: md5, 40: sha1, 64: sha256)."""
    if not isinstance(value, str) or not _HEX[n].match(value):
        at.fail(value, f"{n} hex digits")
    return value


def env_id(value: Any, at: At, *, allow_empty: bool = False) -> str:
    """An env id: 64 hex digits, or "disabled" for steps outside isolation."""
    if value == "disabled" or (allow_empty and value == ""):
        return cast(str, value)  # it compares equal to a str literal
    if not isinstance(value, str) or not _HEX[64].match(value):
        at.fail(value, 'an env id (64 hex digits or "disabled")')
    return value


def matching(value: Any, pattern: re.Pattern[str], what: str, at: At) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        at.fail(value, what)
    return value


def identifier(value: Any, at: At) -> str:
    return matching(value, IDENTIFIER, "a Python identifier", at)


def name(value: Any, at: At) -> str:
    return matching(value, PLAIN_NAME, "a plain name ([A-Za-z0-9_.-], not starting with '.')", at)


def package_name(value: Any, at: At) -> str:
    return matching(value, PACKAGE_NAME, "a package name (letters, digits, '._-', alphanumeric first and last)", at)


def package_version(value: Any, at: At) -> str:
    return matching(value, PACKAGE_VERSION, "an exact package version (PEP 440 or conda, e.g. 2.1.3)", at)


def file_name(value: Any, at: At) -> str:
    """A plain file name: no separators, no '..', nothing hidden."""
    if not isinstance(value, str) or not FILE_NAME.match(value) or ".." in value:
        at.fail(value, "a plain file name")
    return value


def relative_path(value: Any, at: At) -> str:
    """A relative POSIX path that stays inside its root: not absolute, no '..', no backslashes."""
    if (
        not isinstance(value, str)
        or not value
        or value.startswith("/")
        or "\\" in value
        or "\0" in value
        or re.match(r"^[A-Za-z]:", value)
        or any(part == ".." for part in value.split("/"))
    ):
        at.fail(value, "a relative path inside the flow's folder (no '..', not absolute, no backslashes)")
    return value


def choice(value: Any, enum: type[E], at: At) -> E:
    """The member of ``enum`` whose value is ``value``."""
    try:
        return enum(value)
    except ValueError:
        at.fail(value, "one of " + ", ".join(repr(m.value) for m in enum))


def table_of(value: Any, at: At, key: Callable[[Any, At], str], item: Callable[[Any, At], T]) -> dict[str, T]:
    """A table whose keys pass ``key`` and whose values decode with ``item``; order kept."""
    of_type(value, dict, at)
    return {key(k, at / k): item(v, at / k) for k, v in value.items()}


def list_of(value: Any, at: At, item: Callable[[Any, At], T]) -> list[T]:
    of_type(value, list, at)
    return [item(v, at / i) for i, v in enumerate(value)]


def string(value: Any, at: At) -> str:
    text: str = of_type(value, str, at)
    return text


def cap(items: Iterable[object], limit: int = 20, sep: str = ", ") -> str:
    """The first ``limit`` items, then "and N more": messages stay short whatever the input."""
    items = list(items)
    text = sep.join(map(str, items[:limit]))
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def cap_lines(lines: Iterable[str], limit: int = 20, indent: str = "  ") -> list[str]:
    """The first ``limit`` lines, then one line "and N more": a listing stays short whatever the input."""
    lines = list(lines)
    return lines[:limit] + ([f"{indent}and {len(lines) - limit} more"] if len(lines) > limit else [])


def short(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters: a hostile or huge value never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


# -- bounded decoding --------------------------------------------------------------------------------
# json and tomllib recurse once per nesting level: "[" * 100000 raises RecursionError (not ValueError),
# and a document nested deep enough to decode still breaks any code that walks it. Every untrusted
# document is decoded here, within a size and a depth limit, and anything else is ``Invalid``.

#: no document repro writes nests deeper than ~10 levels (a record: steps.s.tasks.t.artifacts.a.sha1)
MAX_DEPTH = 64
#: the largest record (a run of very many tasks) repro reads; other documents pass their own limit
MAX_DOCUMENT_BYTES = 256 << 20


def too_deep(doc: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``doc`` (decoded JSON or TOML) nests lists/tables deeper than ``limit`` (no recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _bounded(data: str | bytes, at: At, what: str, max_bytes: int) -> str:
    size = len(data)  # characters of a str: at most 4 bytes each, checked again as bytes would be needless
    if size > max_bytes:
        raise Invalid(at, f"{size} bytes", f"{what} of {size} bytes is larger than {max_bytes} bytes")
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(at, data[:40], f"not {what} (not UTF-8 text)") from None
    return data


def _checked_depth(doc: Any, at: At, what: str, max_depth: int) -> Any:
    if too_deep(doc, max_depth):
        raise Invalid(at, "...", f"not {what} (nested deeper than {max_depth} levels)")
    return doc


def load_json(
    data: str | bytes,
    at: At,
    what: str = "a JSON document",
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Decode untrusted JSON: at most ``max_bytes``, nested at most ``max_depth`` levels, else ``Invalid``
    naming ``at.where`` and ``what`` the document should have been (never a RecursionError)."""
    text = _bounded(data, at, what, max_bytes)
    try:
        doc = json.loads(text)
    except RecursionError:
        raise Invalid(at, text[:40], f"not {what} (nested deeper than {max_depth} levels)") from None
    except ValueError as exc:
        raise Invalid(at, text[:40], f"not {what} (invalid JSON: {short(str(exc))})") from None
    return _checked_depth(doc, at, what, max_depth)


def load_toml(
    data: str | bytes,
    at: At,
    what: str = "a TOML document",
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
) -> dict[str, Any]:
    """``load_json`` for TOML (tomllib recurses too)."""
    text = _bounded(data, at, what, max_bytes)
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except RecursionError:
        raise Invalid(at, text[:40], f"not {what} (nested deeper than {max_depth} levels)") from None
    except ValueError as exc:  # TOMLDecodeError
        raise Invalid(at, text[:40], f"not {what} (invalid TOML: {short(str(exc))})") from None
    _checked_depth(doc, at, what, max_depth)
    return doc
