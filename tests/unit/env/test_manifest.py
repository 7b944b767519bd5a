"""The file manifest of a built environment: stamps first, content where a stamp changed (issue 22 item 6)."""

from __future__ import annotations

import base64
import hashlib
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


ENV = "e" * 64


def take(root: Path) -> Path:
    """The env's manifest, written beside it; its path."""
    path = root.parent / f"{root.name}.files.json"
    manifest.write(path, manifest.take(root, ENV, (".marker",)))
    return path


def check(root: Path, path: Path) -> manifest.Check:
    return manifest.check(root, path, ENV, (".marker",))


def test_an_untouched_env_is_intact_without_reading_a_file(tmp_path, monkeypatch):
    root = tmp_path / "env"
    tree(root)
    path = take(root)
    assert set(manifest.read(path, ENV)["files"]) == {"lib/python3.11/site-packages/six.py", "bin/python"} | {
        "lib/python3.11/site-packages/six-1.16.0.dist-info/RECORD"
    }
    monkeypatch.setattr(manifest, "sha256_file", lambda p: pytest.fail(f"{p} was read on the fast path"))
    monkeypatch.setattr(manifest, "compare", lambda *a: pytest.fail("the files were compared one by one"))
    assert check(root, path) == manifest.Check()


def test_a_same_size_edit_is_caught_by_its_content(tmp_path):
    root = tmp_path / "env"
    site = tree(root)
    path = take(root)
    six = site / "six.py"
    six.write_text('__version__ = "1.16.9"\n')  # same size
    problems = check(root, path).problems
    assert problems == ["lib/python3.11/site-packages/six.py changed (same size, other bytes)"]


def test_a_touched_file_is_rehashed_once_and_its_new_stamp_kept(tmp_path):
    root = tmp_path / "env"
    site = tree(root)
    path = take(root)
    st = (site / "six.py").stat()
    os.utime(site / "six.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    found = check(root, path)
    assert found.problems == [] and found.refreshed is not None
    assert found.refreshed["nonce"] == manifest.read(path, ENV)["nonce"]
    manifest.write(path, found.refreshed)
    assert check(root, path) == manifest.Check()


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
    root = tmp_path / "env"
    site = tree(root)
    path = take(root)
    damage(root, site)
    problems = check(root, path).problems
    assert any(words in p for p in problems), problems


def test_the_skipped_names_are_not_listed_but_bytecode_is(tmp_path):
    root = tmp_path / "env"
    site = tree(root)
    path = take(root)
    (root / ".marker").write_text('{"changed": 1}')
    assert check(root, path).problems == []
    # a .pyc CPython wrote later for a source the build did not compile (a conda env's standard library,
    # read by a probe) is its cache, not a change; one the build listed is checked as any other file
    (site / "__pycache__").mkdir()
    (site / "__pycache__" / "six.cpython-311.pyc").write_bytes(b"\0")
    assert check(root, path).problems == []
    (site / "sixer.py").write_text("x = 1\n")  # a source added beside it is a change
    rel = os.path.relpath(site / "sixer.py", root)
    assert check(root, path).problems == [f"{rel} was added"]
    (site / "sixer.py").unlink()
    listed = take(root)  # now the .pyc is listed: bytes changed in it are damage
    (site / "__pycache__" / "six.cpython-311.pyc").write_bytes(b"\1")
    pyc = os.path.relpath(site / "__pycache__" / "six.cpython-311.pyc", root)
    assert any(p.startswith(pyc) for p in manifest.check(root, listed, ENV, (".marker",), full=True).problems)


def test_a_manifest_is_read_only_for_its_env_and_format(tmp_path):
    root = tmp_path / "env"
    tree(root)
    path = take(root)
    assert manifest.read(path, ENV) is not None
    assert manifest.read(path, "f" * 64) is None
    assert "is missing or unreadable" in check(root, tmp_path / "nothing.json").problems[0]
    path.write_text("{not json")
    assert manifest.read(path, ENV) is None
    path.write_text('{"format": 1, "env_id": "' + ENV + '"}\n[]\n')
    assert manifest.read(path, ENV, files=False) is not None and manifest.read(path, ENV) is None


def test_uv_installed_files_take_their_record_hash_and_others_are_hashed(tmp_path):
    root = tmp_path / "env"
    site = tree(root)
    dist = site / "six-1.16.0.dist-info"
    (dist / "INSTALLER").write_text("uv")
    digest = hashlib.sha256((site / "six.py").read_bytes()).digest()
    b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    (dist / "RECORD").write_text(f"six.py,sha256={b64},23\n../../../bin/six-tool,sha256={b64},23\n")
    assert manifest.record_hashes(root) == {
        "lib/python3.11/site-packages/six.py": digest.hex(),
        "bin/six-tool": digest.hex(),
    }
    (dist / "INSTALLER").write_text("conda")  # conda rewrites its prefix in files after RECORD was written
    assert manifest.record_hashes(root) == {}


def test_an_env_folder_that_vanishes_is_a_problem_not_an_error(tmp_path):
    root = tmp_path / "env"
    tree(root)
    path = take(root)
    os.rename(root, tmp_path / "elsewhere")  # another process rebuilding it
    assert "cannot be read" in check(root, path).problems[0]


def test_conda_linked_files_take_their_records_hash_unless_rattler_rewrote_them(tmp_path):
    import json

    (tmp_path / "conda-meta").mkdir()
    paths = [
        {"_path": "lib/a.py", "path_type": "hardlink", "sha256": "a" * 64},
        {
            "_path": "bin/tool",
            "path_type": "hardlink",
            "sha256": "b" * 64,
            "prefix_placeholder": "/opt/x",
            "sha256_in_prefix": "c" * 64,
        },
        {"_path": "bin/python", "path_type": "softlink", "sha256_in_prefix": "d" * 64},
        {"_path": "bin/entry", "path_type": "unix_python_entry_point", "sha256": "e" * 64},
        {"_path": "lib/short", "path_type": "hardlink", "sha256": "f"},
    ]
    (tmp_path / "conda-meta" / "pkg-1-0.json").write_text(json.dumps({"paths_data": {"paths": paths}}))
    (tmp_path / "conda-meta" / "broken.json").write_text("{")
    assert manifest.conda_hashes(tmp_path) == {"lib/a.py": "a" * 64, "bin/tool": "c" * 64}


def test_bit_rot_under_a_kept_stamp_is_seen_only_by_a_full_check(tmp_path):
    root = tmp_path / "env"
    site = tree(root)
    path = take(root)
    six = site / "six.py"
    st = six.stat()
    with open(six, "r+b") as fh:  # same inode and size; the modification time put back below
        fh.write(b"#")
    os.utime(six, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert check(root, path).problems == []
    found = manifest.check(root, path, ENV, (".marker",), full=True)
    assert found.problems == ["lib/python3.11/site-packages/six.py changed (same size, other bytes, same stamp)"]
