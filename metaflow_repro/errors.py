"""Error types. Each class carries the exit code the command line uses for it, and each error the
structured facts it is about (flow, step, library, path), so callers never parse its message.

Exit codes are a public contract (the README documents them): 0 ok, 1 a difference or drift was found,
2 bad input or usage, 3 infrastructure failure (unreachable index or store, a tool that crashed,
bytes that do not match their hash).
"""

from __future__ import annotations

import errno
import os
import re

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3


class ReproError(Exception):
    """Base class. ``str(err)`` is a complete message meant for the user."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str = "",
        *,
        flow: str | None = None,
        step: str | None = None,
        library: str | None = None,
        path: str | None = None,
        exit_code: int | None = None,
    ):
        super().__init__(message)
        self.flow, self.step, self.library, self.path = flow, step, library, path
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(ReproError):
    """The user's flow, declaration, lock file or arguments are wrong. Says what to do."""

    exit_code = EXIT_BAD_INPUT


class FlowLoadError(BadInput):
    """The flow file does not import, or holds no FlowSpec."""


class NoFlowFound(FlowLoadError):
    """The file imports but defines no flow (a helper module, a base class)."""


class SpecError(BadInput):
    """A decorator's arguments are malformed or not pinned."""


class ResolutionError(BadInput):
    """The declared packages cannot be resolved (unknown package or version, conflicting pins)."""


class LockFileError(BadInput):
    """The lock file is malformed, hand-edited or does not match its own contents."""


class PythonNotFound(BadInput):
    """The requested interpreter is not installed here."""


class OfflineMissing(BadInput):
    """--offline was asked for but a needed file is not in the package cache."""


class InfraError(ReproError):
    """The network, a package index, a store or a tool failed; retrying may help."""

    exit_code = EXIT_INFRA


class IntegrityError(InfraError):
    """Bytes (a package file, a store object, an artifact) do not match the hash recorded for them.
    The input that named them was fine; the bytes are wrong, so it is exit code 3 everywhere.
    ``detail`` says what was found, without saying where (callers that know where add it)."""

    def __init__(self, message: str = "", *, detail: str = "", **facts):
        super().__init__(message, **facts)
        self.detail = detail or message


_USER_ERRNOS = {
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "it is on a read-only file system",
    errno.ENOENT: "create the folder first, or fix the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file name",
    errno.EEXIST: "it exists and is not a folder",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ELOOP: "the path loops through symbolic links",
}


def from_os_error(exc: OSError) -> ReproError:
    """The ReproError for a file-system error no code path turned into one: a path the user gave or
    set (REPRO_HOME read-only or a file, ``-o`` into a missing folder...) is bad input (2); anything
    else (a full disk, an I/O error) is an infrastructure failure (3)."""
    where = (f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")) if exc.filename else "a file"
    what = exc.strerror or f"{type(exc).__name__}: {exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk: which file system, how much it needed
        from metaflow_repro.fsutil import space_note

        note = space_note(exc.filename or os.getcwd())
        return InfraError(
            f"{where}: {what}; {note}. Free some space there and run again.", path=str(exc.filename or "")
        )
    hint = _USER_ERRNOS.get(exc.errno) if exc.errno is not None else None
    if hint:
        return BadInput(
            f"{where}: {what}; {hint}. (REPRO_HOME and the store must be writable folders; "
            "output files must go into existing folders.)",
            path=str(exc.filename or ""),
        )
    return InfraError(f"{where}: {what}", path=str(exc.filename or ""))


# -- what a message may show ------------------------------------------------------------------------

#: the most characters of one value (a field of a record, a REF, a pointer) a message or listing shows
VALUE_CHARS = 200
#: the most characters of one line the command line prints
LINE_CHARS = 1000
#: the most lines of one error message the command line prints
MESSAGE_LINES = 200

#: characters never printed as they are: the C0 controls but tab (a newline too: a value never starts a
#: line of its own), DEL and the C1 controls, Unicode's invisible format characters (bidirectional
#: overrides and isolates, zero-width characters, line and paragraph separators, tags) and lone
#: surrogates (a file name read with surrogateescape)
_UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0001\U000e0020-\U000e007f]"
)


def _escaped(match: re.Match) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def printable(value: object, limit: int = VALUE_CHARS) -> str:
    """``str(value)`` safe to print on a terminal and short: every control or invisible format
    character escaped (``\\x1b``, ``\\u202e``; newlines too), and past ``limit`` characters cut, saying
    how long it was (``...(2000000 characters)``). Pure; for values and single lines."""
    text = str(value)
    shown = _UNSAFE.sub(_escaped, text[:limit])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}...({len(text)} characters)"


def printable_lines(text: str, line_limit: int = LINE_CHARS, max_lines: int = MESSAGE_LINES) -> str:
    """A message (or a rendered listing) safe to print: its lines kept, each ``printable`` within
    ``line_limit``, and at most ``max_lines`` of them, then how many more there were."""
    lines = str(text).split("\n")
    shown = [printable(line, line_limit) for line in lines[:max_lines]]
    if len(lines) > max_lines:
        shown.append(f"...and {len(lines) - max_lines} more lines")
    return "\n".join(shown)
