"""Error types. Each class carries the exit code the command line uses for it, and each error the
structured facts it is about (flow, step, library, path), so callers never parse its message.

Exit codes are a public contract (see DESIGN.md): 0 ok, 1 a difference or drift was found,
2 bad input or usage, 3 infrastructure failure (unreachable index or store, a tool that crashed,
bytes that do not match their hash).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3


class ReproError(Exception):
    """Base class. ``str(err)`` is a complete message meant for the user."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str = "", *, flow: str | None = None, step: str | None = None,
                 library: str | None = None, path: str | None = None, exit_code: int | None = None):
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
