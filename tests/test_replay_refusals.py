"""A replay on AWS Batch that can never work is refused before anything is fetched, built or run
(issue 13): Batch steps need an S3 datastore, whose client (boto3) a run recorded with a local
datastore does not have in its locked environments."""

from __future__ import annotations

import pytest
from metaflow import metaflow_config

from metaflow_repro.errors import BadInput
from metaflow_repro.operations.replay import check_where, replay
from metaflow_repro.settings import load_settings
from metaflow_repro.store import layout, open_store
from tests.unit.model.test_record import make_record  # a record the strict decoder accepts


@pytest.fixture
def batch_config(monkeypatch):
    """Metaflow's Batch settings as a reachable Batch would have them (no job is ever submitted here)."""
    monkeypatch.setattr(metaflow_config, "BATCH_JOB_QUEUE", "queue")
    monkeypatch.setattr(metaflow_config, "DATASTORE_SYSROOT_S3", "s3://somewhere/metaflow")
    monkeypatch.setattr(metaflow_config, "DEFAULT_DATASTORE", "s3")


def test_check_where_batch_needs_an_s3_default_datastore(batch_config, monkeypatch, tmp_path):
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    check_where("batch", "s3://bucket/prefix", settings, option="--repro-on")  # all set: accepted
    monkeypatch.setattr(metaflow_config, "DEFAULT_DATASTORE", "local")
    with pytest.raises(BadInput) as err:
        check_where("batch", "s3://bucket/prefix", settings, option="--repro-on")
    text = str(err.value)
    assert text.startswith("--repro-on batch: Metaflow's default datastore is 'local', not s3")
    assert "METAFLOW_DEFAULT_DATASTORE=s3" in text and "METAFLOW_DATASTORE_SYSROOT_S3" in text


def test_a_run_recorded_with_a_local_datastore_is_refused_on_batch_before_anything_is_fetched(
    batch_config, s3_server, s3_bucket, tmp_path
):
    store = open_store(f"s3://{s3_bucket}/store")
    record = make_record(datastore={"type": "local", "root": "/tmp/mf"})
    folder = layout.flow_dir(record.flow, record.identity)
    store.put_bytes(layout.record(folder, record.run_id), record.to_json().encode())
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    with pytest.raises(BadInput) as err:
        replay(f"{folder}/{record.run_id}", store.uri, settings, on="batch", log=lambda *_: None)
    text = str(err.value)
    assert "was recorded with a 'local' Metaflow datastore" in text and "no S3 client (boto3)" in text
    assert "record the run with an S3 datastore" in text and err.value.exit_code == 2
    assert [o.key for o in store.list("")] == [layout.record(folder, record.run_id)]  # nothing else written
    assert not any((tmp_path / "home").rglob("*.tar.gz")) and not settings.home.replays.exists()
