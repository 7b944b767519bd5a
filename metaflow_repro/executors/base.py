"""The seam between an operation and the place it runs a replay: the ``Place`` protocol, and the frozen
request and plan a place is handed.

An executor is called ``Place`` here because the record's dataclass ``model.interpreter.Executor``
(what a run ran on: kind + image) keeps that name. Each place is keyed by an ``ExecutorKind`` and
found through the ``repro_executors`` hook (``metaflow_repro.executors.get`` / ``for_place``), so the
operation asks the place and never tests a place's name: whether it is reachable from here, which
run options and environment it gives the flow, which records and flows it cannot run, and how it
runs a replay. A place that runs the flow on this machine (local, batch: the runtime runs here and
submits the jobs) hands the request to ``here``, the operation's own prepare-and-run; a place that
runs elsewhere (docker) starts that same stage there and reads its ``RunResult`` back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from metaflow_repro.env.pythons import Interpreter
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.model.record import RunRecord
from metaflow_repro.model.replay import RunResult
from metaflow_repro.settings import Settings
from metaflow_repro.store.base import Store

Log = Callable[[str], None]


@dataclass(frozen=True)
class ReplayRequest:
    """A replay asked for, its record loaded and checked once: what every place is given."""

    original: RunRecord
    store: Store
    settings: Settings
    place: Place  # where the flow runs (in a container: the local place, ``executor`` says docker)
    executor: Executor  # what the replay's record says ran it
    ref: str  # the record's REF in the store (Flow[@id]/run_id)
    record_file: Path | None = None  # the record was given as this file (validated, written again)
    extra_args: tuple[str, ...] = ()
    image: str | None = None  # a container image asked for (docker)


@dataclass(frozen=True)
class ReplayArgs:
    """The Metaflow `run` arguments of a replay, by where each comes from."""

    recorded: tuple[str, ...]  # configs, parameters, IncludeFile contents: never about placement
    placed: tuple[str, ...]  # the recorded run options, as the place runs them
    dropped: tuple[str, ...]  # recorded run options the place dropped
    extra: tuple[str, ...]  # the user's own, after ``--`` (last: they add to or override the others)

    @property
    def metaflow_args(self) -> tuple[str, ...]:
        return (*self.recorded, *self.placed, *self.extra)


@dataclass(frozen=True)
class ReplayPlan:
    """Everything a replay runs with, pulled and verified once before anything runs (``prepare``)."""

    request: ReplayRequest
    workdir: Path  # the replay's own folder: code, inputs, datastore
    code: Path  # the recorded code package, extracted
    flow_file: Path
    locks: Mapping[str, PlatformLock]  # every recorded environment, its package files verified here
    interpreters: Mapping[str, Interpreter]  # Python version -> the interpreter its envs were rebuilt with
    args: ReplayArgs
    env: Mapping[str, str]  # the Metaflow process's environment
    settings: Settings  # the flow's settings under ``env``


#: the operation's own stage: prepare the request here and run it (a place that runs here calls it)
RunHere = Callable[[ReplayRequest], RunResult]


@runtime_checkable
class Place(Protocol):
    """A place a replay runs (``local``, ``docker``, ``batch``, or a plugin's)."""

    kind: ExecutorKind

    def check_args(self, extra_args: Sequence[str], image: str | None, option: str = "--on") -> None:
        """Refuse, before anything is reached or fetched, arguments this place cannot honour."""

    def check(self, store_uri: str, settings: Settings, option: str = "--on") -> None:
        """Refuse a place this machine cannot reach (naming what to set), before anything runs."""

    def check_record(self, original: RunRecord) -> None:
        """Refuse a record this place can never replay, before anything is fetched or built."""

    def check_code(self, original: RunRecord, flow_file: Path, where: str) -> None:
        """Refuse a recorded flow (its code, extracted) that would not run ``where`` as asked."""

    def place(
        self, run_options: Sequence[str], extra_args: Sequence[str] = (), original: Executor | None = None
    ) -> tuple[list[str], list[str]]:
        """The recorded run options as this place runs them, and the ones dropped (pure); ``original``:
        what ran the replayed run (Batch pins the image its jobs ran in)."""

    def dropped_note(self, dropped: Sequence[str], extra_args: Sequence[str], where: str) -> str:
        """What to tell the user about the recorded options ``place`` dropped."""

    def environment(self, original: RunRecord, store_uri: str, env: Mapping[str, str], log: Log) -> dict[str, str]:
        """The Metaflow process's environment on this place, from the replay's own ``env``."""

    def executor(self) -> Executor:
        """What a replay's record says ran it, when the caller does not say."""

    def run(self, request: ReplayRequest, here: RunHere, log: Log) -> RunResult:
        """Run the replay: what ran, its record, how it ended (verdict-less)."""

    def staged_objects(self, store: Store, envs: set[str]) -> set[str]:
        """The store objects this place wrote for the environments ``envs`` (of records gc keeps) that no
        record names, so that gc keeps them too (Batch: its bootstrap manifests and what they name)."""
