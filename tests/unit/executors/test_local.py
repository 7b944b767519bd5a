"""Where a replay runs is where it is asked to run: the recorded run options are rewritten for
``--on local|docker|batch`` by each place (``Place.place``, pure)."""

from __future__ import annotations

import pytest

from metaflow_repro import executors


def placed_run_options(run_options, on, extra_args=()):
    """The recorded run options as the place ``on`` runs them, and the ones it dropped."""
    return executors.for_place(on).place(run_options, extra_args)


@pytest.mark.parametrize(
    "recorded",
    [
        ["--with", "batch"],
        ["--with", "batch:cpu=2,memory=4000"],
        ["--with=batch"],
        ["--with=batch:image=x"],
    ],
)
@pytest.mark.parametrize("on", ["local", "docker"])
def test_a_local_or_docker_replay_drops_every_batch_option_and_says_which(recorded, on):
    args, dropped = placed_run_options(["--max-workers", "2", *recorded, "--with", "retry", "--tag", "t"], on)
    assert args == ["--max-workers", "2", "--with", "retry", "--tag", "t"]
    assert dropped == recorded


def test_a_batch_replay_of_a_local_run_adds_batch():
    args, dropped = placed_run_options(["--with", "retry"], "batch")
    assert args == ["--with", "retry", "--with", "batch"] and dropped == []
    assert placed_run_options([], "batch") == (["--with", "batch"], [])


def test_a_batch_replay_of_a_batch_run_keeps_its_recorded_batch_attributes_once():
    recorded = ["--with", "batch:cpu=2", "--tag", "t"]
    assert placed_run_options(recorded, "batch") == (recorded, [])
    assert placed_run_options(["--with=batch:cpu=2"], "batch") == (["--with=batch:cpu=2"], [])


def test_other_decorators_and_look_alikes_stay():
    recorded = ["--with", "batchy", "--with", "retry:times=2", "--tag", "batch", "--with"]
    assert placed_run_options(recorded, "local") == (recorded, [])


@pytest.mark.parametrize("recorded", [[], ["--with", "batch:cpu=2"], ["--with=batch"]])
@pytest.mark.parametrize("mine", [["--with", "batch:memory=16000"], ["--with=batch:memory=16000"]])
def test_the_users_own_batch_spec_after_dashes_wins_on_batch(recorded, mine):
    # Metaflow keeps the FIRST decorator of a name and the extra args come after the placed ones: a
    # recorded or added `--with batch` before them would silently ignore the user's attributes
    args, dropped = placed_run_options(["--tag", "t", *recorded, "--with", "retry"], "batch", mine)
    assert args == ["--tag", "t", "--with", "retry"]
    assert dropped == recorded
    assert placed_run_options(["--tag", "t", *recorded], "batch", ["--with", "retry"])[0].count("--tag") == 1
    assert "batch" in " ".join(placed_run_options(recorded, "batch", ["--with", "retry"])[0])


@pytest.mark.parametrize("on", ["local", "docker"])
def test_a_batch_option_after_dashes_is_refused_before_any_place_is_reached(on, tmp_path):
    # no daemon, no image, no store object is touched: the store named here does not even exist
    from metaflow_repro.errors import BadInput
    from metaflow_repro.operations.replay import replay
    from metaflow_repro.settings import load_settings

    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    missing = (tmp_path / "no-store").as_uri()
    with pytest.raises(BadInput) as err:
        replay("F/1", missing, settings, on=on, extra_args=("--with", "batch:memory=16000"))
    assert f"--on {on} and `--with batch:memory=16000` after --" in str(err.value)
    assert "use --on batch" in str(err.value) and err.value.exit_code == 2
    assert not (tmp_path / "no-store").exists() and not (tmp_path / "home").exists()


BATCH_STEP_FLOW = """
from metaflow import FlowSpec, batch, retry, step


class BStepFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.train)

    @retry
    @batch(cpu=2)
    @step
    def train(self):
        self.next(self.end)

    @step
    def end(self):
        pass
"""


def test_a_step_the_flows_code_sends_to_batch_is_found_and_refuses_a_replay_elsewhere(tmp_path):
    # placement rewrites run options only: a @batch step in the code would run on Batch under --on local
    from metaflow_repro.env.flowfile import batch_steps
    from metaflow_repro.errors import BadInput
    from metaflow_repro.executors.local import check_no_batch_steps
    from tests.helpers import make_record, write_flow

    steps = batch_steps(write_flow(tmp_path / "b", BATCH_STEP_FLOW, name="bstep_flow.py"))
    assert steps == ("train",)
    plain = write_flow(tmp_path / "p", BATCH_STEP_FLOW.replace("@batch(cpu=2)", ""), name="plain_flow.py")
    assert batch_steps(plain) == ()
    record = make_record(run_id="3")
    check_no_batch_steps(record, (), "local")  # nothing to refuse
    with pytest.raises(BadInput) as err:
        check_no_batch_steps(record, steps, "docker")
    text = str(err.value)
    assert "decorates train with @batch" in text and "not on docker as --on says" in text
    assert "replay it with --on batch" in text and err.value.exit_code == 2
