"""`--with batch` for real: moto's Batch runs every task in a container of our Docker daemon, on the
host network, reading and writing moto's S3 (tests/batch_setup.py). Each job is a container start:
the runs here are few and shared between assertions."""

from __future__ import annotations

import pytest

from tests.helpers import run_flow, write_flow

pytestmark = pytest.mark.slow


def test_plain_metaflow_run_with_batch(batch_world, tmp_path):
    """The set-up itself: plain Metaflow (no repro environment) runs every step as a Batch job."""
    path = write_flow(
        tmp_path / "plain",
        """
        import os
        from metaflow import FlowSpec, step
        class PlainBatchFlow(FlowSpec):
            @step
            def start(self):
                self.where = os.environ.get("AWS_BATCH_JOB_ID", "")
                self.next(self.end)
            @step
            def end(self):
                self.where_end = os.environ.get("AWS_BATCH_JOB_ID", "")
        if __name__ == "__main__":
            PlainBatchFlow()
    """,
        conda_source=None,
    )
    r = run_flow(path, tmp_path / "mf", environment="", env=batch_world.env, args=("--with", "batch"))
    assert r.code == 0, r.text[-4000:]
    data = r.inspect("PlainBatchFlow")
    assert data["successful"]
    start, end = data["steps"]["start"][0]["artifacts"], data["steps"]["end"][0]["artifacts"]
    assert start["where"] and end["where_end"] and start["where"] != end["where_end"]  # a Batch job each
