"""Error types, each carrying the exit code the command line uses for it.

Exit codes are a public contract (see DESIGN.md): 0 ok, 1 a difference or drift was found,
2 bad input or usage, 3 infrastructure failure (unreachable index or store, a tool that crashed).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DRIFT = 1
EXIT_BAD_INPUT = 2
EXIT_INFRA = 3


class ReproError(Exception):
    """Base class. ``str(err)`` is a complete message meant for the user."""

    exit_code = EXIT_BAD_INPUT


class BadInput(ReproError):
    """The user's flow, declaration, lock file or arguments are wrong. Says what to do."""

    exit_code = EXIT_BAD_INPUT


class FlowLoadError(BadInput):
    """The flow file does not import, or holds no FlowSpec."""


class SpecError(BadInput):
    """A decorator's arguments are malformed or not pinned."""


class ResolutionError(BadInput):
    """The declared packages cannot be resolved (unknown package or version, conflicting pins)."""


class LockFileError(BadInput):
    """The lock file is malformed, hand-edited or does not match its own contents."""


class PythonNotFound(BadInput):
    """The requested interpreter is not installed here."""


class IntegrityError(BadInput):
    """A package file does not match the sha256 recorded in the lock."""


class OfflineMissing(BadInput):
    """--offline was asked for but a needed file is not in the package cache."""


class InfraError(ReproError):
    """The network, a package index, a store or a tool failed; retrying may help."""

    exit_code = EXIT_INFRA
