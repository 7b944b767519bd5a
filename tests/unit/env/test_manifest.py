"""The file manifest of a built environment: stamps first, content where a stamp changed (issue 22 item 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metaflow_repro.env import manifest


def tree(root: Path) -> Path:
    site = root / "lib" / "python3.11" / "site-packages"
    (site / "six-1.16.0.dist-info").mkdir(parents=True)
    (site / "six.py").write_text('__version__ = "1.16.0"\n')
    (site / "six-1.16.0.dist-info" / "RECORD").write_text("six.py,sha256=x,23\n")
    (root / "bin").mkdir()
    os.symlink("/usr/bin/python3", root / "bin" / "python")
    (root / ".marker").write_text("{}")
    return site


def take(root: Path) -> dict:
    return manifest.take(root, "e" * 64, (".marker",))


def test_an_untouched_env_is_intact_without_reading_a_file(tmp_path, monkeypatch):
    tree(tmp_path)
    listed = take(tmp_path)
    assert set(listed["files"]) == {"lib/python3.11/site-packages/six.py", "bin/python"} | {
        "lib/python3.11/site-packages/six-1.16.0.dist-info/RECORD"
    }
    monkeypatch.setattr(manifest, "sha256_file", lambda p: pytest.fail(f"{p} was read on the fast path"))
    assert manifest.check(tmp_path, listed, (".marker",)) == manifest.Check()


def test_a_same_size_edit_is_caught_by_its_content(tmp_path):
    site = tree(tmp_path)
    listed = take(tmp_path)
    six = site / "six.py"
    six.write_text('__version__ = "1.16.9"\n')  # same size
    problems = manifest.check(tmp_path, listed, (".marker",)).problems
    assert problems == ["lib/python3.11/site-packages/six.py changed (same size, other bytes)"]


def test_a_touched_file_is_rehashed_once_and_its_new_stamp_kept(tmp_path):
    site = tree(tmp_path)
    listed = take(tmp_path)
    st = (site / "six.py").stat()
    os.utime(site / "six.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    found = manifest.check(tmp_path, listed, (".marker",))
    assert found.problems == [] and found.refreshed is not None
    assert found.refreshed["nonce"] == listed["nonce"]
    assert manifest.check(tmp_path, found.refreshed, (".marker",)) == manifest.Check()


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda root, site: (site / "evil.pth").write_text("import os\n"), "site-packages/evil.pth was added"),
        (lambda root, site: (site / "six.py").unlink(), "site-packages/six.py is gone"),
        (lambda root, site: (site / "six.py").write_text("x = 1\n"), "six.py changed (size 23 -> 6)"),
        (
            lambda root, site: (root / "bin" / "python").unlink() or os.symlink("/bin/sh", root / "bin" / "python"),
            "bin/python changed",
        ),
        (
            lambda root, site: (site / "six.py").unlink() or os.symlink("/etc/hostname", site / "six.py"),
            "six.py changed (a link that was not",
        ),
    ],
)
def test_each_damage_names_its_file(tmp_path, damage, words):
    site = tree(tmp_path)
    listed = take(tmp_path)
    damage(tmp_path, site)
    problems = manifest.check(tmp_path, listed, (".marker",)).problems
    assert any(words in p for p in problems), problems


def test_bytecode_and_the_skipped_names_are_not_listed(tmp_path):
    site = tree(tmp_path)
    listed = take(tmp_path)
    (site / "__pycache__").mkdir()
    (site / "__pycache__" / "six.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / ".marker").write_text('{"changed": 1}')
    assert manifest.check(tmp_path, listed, (".marker",)).problems == []


def test_a_manifest_is_read_only_for_its_env_and_format(tmp_path):
    tree(tmp_path / "env")
    path = tmp_path / "env.files.json"
    manifest.write(path, take(tmp_path / "env"))
    assert manifest.read(path, "e" * 64) is not None
    assert manifest.read(path, "f" * 64) is None
    path.write_text("{not json")
    assert manifest.read(path, "e" * 64) is None
    path.write_text('{"format": 1, "env_id": "' + "e" * 64 + '", "files": []}')
    assert manifest.read(path, "e" * 64) is None
