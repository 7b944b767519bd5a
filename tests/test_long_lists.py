"""Every message that lists items from outside (a declaration, a store, a lock) names the first 20 and
then "and N more": a 5000-library declaration or a store of thousands of records never floods a
terminal or a CI log. Real command line; the lock resolves against a local index (no network)."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from metaflow_repro.cli.store import verify_report
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.store import layout, open_store
from tests.helpers import cli, make_record, pkg, write_flow

MANY = 5000


@pytest.mark.slow
def test_a_5000_library_declaration_that_cannot_be_resolved_gives_a_short_error(tmp_path, local_index):
    libs = ", ".join(f"'nolib{i}': '1.0'" for i in range(MANY))
    path = write_flow(
        tmp_path / "proj",
        f"""
        from metaflow import FlowSpec, conda_base, step

        @conda_base(libraries={{{libs}}})
        class BigFlow(FlowSpec):
            @step
            def start(self):
                self.next(self.end)

            @step
            def end(self):
                pass
        """,
        name="big.py",
    )
    r = cli("lock", path, env=local_index)
    assert r.code == 2, r.text[-2000:]
    assert "cannot resolve" in r.err and f"and {MANY + 1 - 20} more" in r.err  # + requests, Metaflow's need
    assert len(r.text) < 8000, f"{len(r.text)} characters"


def _record(run_id: str):
    env = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.16.0"),))
    record = make_record(run_id, env=env.env_id, envs={env.env_id: env})
    steps = {k: replace(s, spec_id="5" * 64) for k, s in record.steps.items()}
    return replace(record, steps=steps, code_sha256="c" * 64, lock_sha256="d" * 64)


def test_store_verify_of_many_damaged_records_lists_20_and_counts_the_rest(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    for i in range(30):  # each names a package, a lock and a code package the store does not have
        record = _record(str(i + 1))
        store.put_bytes(layout.record("F", record.run_id), record.to_json().encode())
    store.put_bytes("runs/F/99/record.json", b"\xff not a record")
    r = cli("store", "verify", "--store", store.uri)
    assert r.code == 1, r.text
    assert r.out.count(": 3 problem(s)") == 20 and "and 10 more record(s) with problems" in r.out
    assert "30 with problems, 1 unreadable" in r.out and "runs/F/99/record.json: unreadable record" in r.out
    assert len(r.out.splitlines()) < 20 * 5


def test_verify_report_caps_every_list():
    broken = [(f"runs/F/{i}/record.json", "not JSON") for i in range(50)]
    results = [(f"F/{i}", [f"missing {k}" for k in range(40)] if i % 2 else []) for i in range(100)]
    text = verify_report(broken, results, "file:///s")
    assert "and 30 more" in text  # unreadable records
    assert "and 20 more" in text  # problems of one record
    assert "and 30 more record(s) with problems" in text  # 50 damaged records
    assert text.count(": ok") == 20 and text.endswith("150 record(s): 50 ok, 50 with problems, 50 unreadable")
    assert verify_report([], [], "file:///s") == "store file:///s: no runs recorded"


def _chain_flow(n: int, base: str) -> str:
    steps = [f"s{i}" for i in range(n)]
    order = ["start", *steps, "end"]
    body = "".join(
        f"""
            @step
            def {name}(self):
                self.next(self.{nxt})
        """
        for name, nxt in pairwise(order)
    )
    return f"""
        from metaflow import FlowSpec, conda_base, step

        @conda_base({base})
        class ChainFlow(FlowSpec):
            {body.strip()}

            @step
            def end(self):
                pass
        """


@pytest.mark.slow
def test_lock_check_and_drift_of_a_flow_with_many_changed_steps_list_20(tmp_path, local_index):
    n = 30
    path = write_flow(tmp_path / "proj", _chain_flow(n, "libraries={'six': '1.16.0'}"), name="chain.py")
    assert cli("lock", path, env=local_index).code == 0
    path.write_text(path.read_text().replace("libraries={'six': '1.16.0'}", "libraries={}"))
    for args in (("lock", path, "--check"), ("drift", path)):
        r = cli(*args, env=local_index)
        assert r.code == 1, r.text[-2000:]
        listed = [line for line in r.out.splitlines() if line.startswith("  ") and "more" not in line]
        assert len(listed) <= 21 and f"and {n + 2 - 20} more" in r.out, r.out  # one finding per step
