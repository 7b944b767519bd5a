"""``--on local``: the replay runs in a process on this machine, and every step with it.

The default place, and the one a container runs its replay on (``executor`` then says docker): a
replay runs where it is asked to, so every recorded ``--with batch`` goes, and a flow whose own code
sends a step to AWS Batch is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from metaflow_repro.env.flowfile import batch_steps
from metaflow_repro.errors import BadInput
from metaflow_repro.executors.base import Log, ReplayRequest, RunHere
from metaflow_repro.executors.batch import batch_options, runs_on_batch
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.record import RunRecord
from metaflow_repro.model.replay import RunResult
from metaflow_repro.model.validate import cap
from metaflow_repro.settings import Settings
from metaflow_repro.store.base import Store

#: the variables that make Metaflow's datastore the replay's own local folder
_LOCAL_DATASTORE = ("METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_DEFAULT_DATASTORE")


def check_no_batch_steps(original: RunRecord, steps: Sequence[str], where: str) -> None:
    """Refuse a replay ``where`` (local, docker) of a flow whose own code decorates ``steps`` with
    ``@batch``: Metaflow would send them to AWS Batch anyway, and placement rewrites run options only."""
    if steps:
        raise BadInput(
            f"{original.ref}: the flow's code decorates {cap(steps)} with @batch, so Metaflow would run "
            f"{'it' if len(steps) == 1 else 'them'} on AWS Batch, not on {where} as --on says (placement rewrites "
            "only the run options): replay it with --on batch",
            flow=original.flow,
            step=steps[0],
        )


class LocalPlace:
    kind = ExecutorKind.LOCAL

    def check_args(self, extra_args: Sequence[str], image: str | None, option: str = "--on") -> None:
        """A ``--with batch`` after ``--`` is refused (this place never sends a step to AWS Batch), and an
        image (only a container runs one)."""
        if runs_on_batch(extra_args):
            on = self.kind.value
            raise BadInput(
                f"{option} {on} and `{' '.join(extra_args)}` after --: a replay runs where {option} says, and "
                f"{option} {on} never sends a step to AWS Batch; use {option} batch (with your `--with batch:...` "
                "after --), or drop the batch option"
            )
        if image:
            raise BadInput("--image is for container replays: add --on docker")

    def check(self, store_uri: str, settings: Settings, option: str = "--on") -> None:
        """This machine is always reachable."""

    def check_record(self, original: RunRecord) -> None:
        """Any record runs here."""

    def check_code(self, original: RunRecord, flow_file: Path, where: str) -> None:
        check_no_batch_steps(original, batch_steps(flow_file), where)

    def place(
        self, run_options: Sequence[str], extra_args: Sequence[str] = (), original: Executor | None = None
    ) -> tuple[list[str], list[str]]:
        """Every recorded ``--with batch[:...]`` goes, so the replay runs where it is asked to."""
        items = list(run_options)
        inside_batch = {i for start, end in batch_options(items) for i in range(start, end)}
        return (
            [a for i, a in enumerate(items) if i not in inside_batch],
            [a for i, a in enumerate(items) if i in inside_batch],
        )

    def dropped_note(self, dropped: Sequence[str], extra_args: Sequence[str], where: str) -> str:
        return f"replaying on {where}, not on AWS Batch: dropped the recorded {' '.join(dropped)}"

    def environment(self, original: RunRecord, store_uri: str, env: Mapping[str, str], log: Log) -> dict[str, str]:
        """A run that had an S3 datastore (its steps' environments hold Metaflow's S3 needs, boto3: the
        same envs need the same datastore) gets one again, from Metaflow's own settings here; any other
        keeps the replay's own local datastore."""
        if original.datastore.get("type") != "s3":
            return dict(env)
        log(f"{original.ref} had an S3 datastore, so the replay has one too (Metaflow's settings here)")
        return {**{k: v for k, v in env.items() if k not in _LOCAL_DATASTORE}, "METAFLOW_DEFAULT_DATASTORE": "s3"}

    def executor(self) -> Executor:
        return Executor()

    def run(self, request: ReplayRequest, here: RunHere, log: Log) -> RunResult:
        return here(request)

    def staged_objects(self, store: Store, envs: set[str]) -> set[str]:
        return set()  # a replay here writes only what its record names
