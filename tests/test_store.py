"""The store contract, the same for a local folder and for S3 over real HTTP (moto's server)."""

import pytest

from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.store import StoreObjectMissing, open_store
from metaflow_repro.store.snapshot import parse_ref


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store((tmp_path / "store").as_uri())
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/team/repro")


def test_store_contract(store, tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 3_000_000)
    assert not store.exists("packages/a/b.whl")
    store.put_file("packages/a/b.whl", src)
    store.put_bytes("runs/F/1/record.json", b"{}")
    assert store.exists("packages/a/b.whl") and store.get_bytes("runs/F/1/record.json") == b"{}"
    dest = tmp_path / "out" / "b.whl"
    store.get_file("packages/a/b.whl", dest)
    assert dest.read_bytes() == src.read_bytes()
    keys = sorted(i.key for i in store.list("packages/"))
    assert keys == ["packages/a/b.whl"]
    assert [i.size for i in store.list("packages/")] == [3_000_000]
    with pytest.raises(StoreObjectMissing, match="missing object nope"):
        store.get_bytes("nope")
    with pytest.raises(StoreObjectMissing):
        store.get_file("nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    store.delete("packages/a/b.whl")
    assert not store.exists("packages/a/b.whl")


def test_unreachable_s3_is_an_infrastructure_error(monkeypatch):
    from tests.helpers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    store = open_store("s3://bucket/prefix")
    with pytest.raises(InfraError) as err:
        store.exists("runs/x")
    assert err.value.exit_code == 3 and "s3://bucket/prefix" in str(err.value)


@pytest.mark.parametrize("text", ["", "NoSlash", "Flow/", "/123", "Flow/1/2", "Flow/run id", "9Flow/1"])
def test_malformed_refs_are_refused(text):
    with pytest.raises(BadInput, match="not a run reference"):
        parse_ref(text)


def test_refs():
    assert parse_ref("TrainFlow/1742").run_id == "1742"
    assert parse_ref("TrainFlow/latest").flow == "TrainFlow"
