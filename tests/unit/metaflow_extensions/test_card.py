"""The repro card's listing of what a task read outside the snapshot (card.reads_section, issue 23): from the
task's own report (its metadata), escaped, bounded, and nothing for a task that read nothing."""

from __future__ import annotations

import json

import metaflow  # noqa: F401 - Metaflow loads its extensions (this card among them) first

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_extensions.repro.plugins.card import reads_section


def test_the_card_lists_files_outside_the_snapshot_and_endpoints_loopback_apart():
    report = {
        p.READS_WATCHED: True,
        p.READS_OUTSIDE: ["/home/u/<x>.csv"],
        p.READS_OUTSIDE_COUNT: 3,
        p.READS_HOSTS: ["huggingface.co:443"],
        p.READS_HOSTS_COUNT: 1,
        p.READS_LOOPBACK: ["127.0.0.1:8765"],
        p.READS_LOOPBACK_COUNT: 1,
    }
    text = "\n".join(reads_section({p.META_READS: json.dumps(report)}))
    assert "Read outside the snapshot" in text and "/home/u/&lt;x&gt;.csv" in text and "and 2 more" in text
    assert "<td class='fails'>network endpoint</td><td><code>huggingface.co:443</code>" in text
    assert "network endpoint on this machine (loopback)</td><td><code>127.0.0.1:8765</code>" in text


def test_the_card_says_nothing_of_a_task_that_read_nothing_and_survives_a_bad_report():
    assert reads_section({}) == [] and reads_section({p.META_READS: "{not json"}) == []
    assert reads_section({p.META_READS: json.dumps({p.READS_HOSTS: 3, p.READS_HOSTS_COUNT: "x"})}) == []
    assert "not watched" in reads_section({p.META_READS: json.dumps({p.READS_WATCHED: False})})[0]
