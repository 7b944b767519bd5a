"""Error types. Each class carries the exit code the command line uses for it, and each error the
structured facts it is about (flow, step, library, path), so callers never parse its message.

Exit codes are a public contract (the README documents them): 0 ok, 1 a difference or drift was found,
2 bad input or usage, 3 infrastructure failure (unreachable index or store, a tool that crashed,
bytes that do not match their hash).
"""

from __future__ import annotations

import errno
import os

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
