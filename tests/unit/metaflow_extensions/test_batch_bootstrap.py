"""The Batch instance cache's checks (batch_bootstrap.check_tree, cached_tree): a folder any job of the
instance can write, so a tree there is used only if it is exactly what the verified manifest lists."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from metaflow_extensions.repro.plugins.batch_bootstrap import (
    ANY,
    DIR,
    FILE,
    LINK,
    RECORD,
    Failed,
    _NotCached,
    cached_tree,
    check_tree,
    record_digest,
)

FILES = {"bin": b"", "bin/tool": b"#!/bin/sh\n", "lib": b"", "lib/x.py": b"x = 1\n"}


def _expected() -> dict[str, list[str]]:
    out = {k: ([DIR, ""] if not v else [FILE, hashlib.sha256(v).hexdigest()]) for k, v in FILES.items()}
    out["bin/python"] = [LINK, "tool"]
    return out


def _make(dest: str) -> None:
    for rel, body in FILES.items():
        path = Path(dest) / rel
        if body:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        else:
            path.mkdir(parents=True, exist_ok=True)
    (Path(dest) / "bin" / "python").symlink_to("tool")


def test_a_tree_that_is_what_the_manifest_lists_checks(tmp_path):
    _make(str(tmp_path / "t"))
    assert check_tree(str(tmp_path / "t"), _expected()) == ""


@pytest.mark.parametrize(
    "change, named",
    [
        ("folder", "lib/x.pth was added"),  # an empty folder is a namespace package to `import`
        ("hardlink", "lib/x.py is not the file it was"),  # its bytes can change from outside the tree
        ("setuid", "bin/tool is not the file it was"),
        ("fifo", "lib/x.py is not the file it was"),
        ("file-for-link", "bin/python is not the link it was"),
        ("link-for-folder", "lib/x.py is missing"),  # what was in it (lib itself: not the folder it was)
    ],
)
def test_what_a_job_may_have_done_to_a_cached_tree_is_named(tmp_path, change, named):
    tree = tmp_path / "t"
    _make(str(tree))
    if change == "folder":
        (tree / "lib" / "x.pth").mkdir()
    elif change == "hardlink":
        os.link(tree / "lib" / "x.py", tmp_path / "elsewhere")
    elif change == "setuid":
        (tree / "bin" / "tool").chmod(0o755 | stat.S_ISUID)
    elif change == "fifo":
        (tree / "lib" / "x.py").unlink()
        os.mkfifo(tree / "lib" / "x.py")
    elif change == "file-for-link":
        (tree / "bin" / "python").unlink()
        (tree / "bin" / "python").write_bytes(b"#!/bin/sh\n")
    else:
        (tree / "lib" / "x.py").unlink()
        (tree / "lib").rmdir()
        (tree / "lib").symlink_to(tmp_path)
    assert check_tree(str(tree), _expected()).startswith(named)


@pytest.mark.parametrize(
    "change, named",
    [
        ("edited", "lib/x.py changed"),
        ("retargeted", "bin/python is not the link it was"),
        ("folder-for-file", "lib/x.py is not the file or link it was"),
        ("file-for-folder", "share is not the folder it was"),
        ("folder-for-any", "lib/marker is not the file or link it was"),
        ("removed", "lib/x.py is missing"),
        ("two-problems", "bin/tool changed"),  # the first in path order, whatever was found first
    ],
)
def test_bytes_targets_and_kinds_that_differ_are_named(tmp_path, change, named):
    tree = tmp_path / "t"
    _make(str(tree))
    (tree / "lib" / "marker").write_bytes(b"any bytes\n")
    (tree / "share").mkdir()
    expected = {**_expected(), "lib/marker": [ANY, "not compared"], "share": [DIR, ""]}
    assert check_tree(str(tree), expected) == ""
    if change in ("edited", "two-problems"):
        (tree / "lib" / "x.py").write_bytes(b"x = 2\n")
    if change == "two-problems":
        (tree / "bin" / "tool").write_bytes(b"#!/bin/bash\n")
    elif change == "retargeted":
        (tree / "bin" / "python").unlink()
        (tree / "bin" / "python").symlink_to("../lib/x.py")
    elif change == "folder-for-file":
        (tree / "lib" / "x.py").unlink()
        (tree / "lib" / "x.py").mkdir()
    elif change == "file-for-folder":
        (tree / "share").rmdir()
        (tree / "share").write_bytes(b"")
    elif change == "folder-for-any":
        (tree / "lib" / "marker").unlink()
        (tree / "lib" / "marker").mkdir()
    elif change == "removed":
        (tree / "lib" / "x.py").unlink()
    assert check_tree(str(tree), expected) == named


def test_a_record_file_is_compared_without_the_installers_cache_lines(tmp_path):
    tree = tmp_path / "t"
    _make(str(tree))
    record = tree / "lib" / "RECORD"
    lines = "six.py,sha256=abc,10\nsix-1.0.dist-info/uv_cache.json,sha256=%s,5\n"
    record.write_text(lines % "one")
    expected = {**_expected(), "lib/RECORD": [RECORD, record_digest(record.read_bytes())]}
    assert check_tree(str(tree), expected) == ""
    record.write_text(lines % "another install")
    assert check_tree(str(tree), expected) == ""
    record.write_text("six.py,sha256=def,10\n")
    assert check_tree(str(tree), expected) == "lib/RECORD changed"


def test_a_generation_that_does_not_check_is_made_again_as_the_next_number(tmp_path, capsys):
    root = str(tmp_path / "envs" / "key")
    first = cached_tree(root, "env", _expected(), _make, "the env e")
    assert first == os.path.realpath(os.path.join(root, "1", "env"))
    (Path(first) / "lib" / "x.py").write_bytes(b"x = 2\n")
    os.mkdir(os.path.join(root, "\u00b2"))  # not a generation (str.isdigit() would say it is)
    second = cached_tree(root, "env", _expected(), _make, "the env e")
    assert second == os.path.realpath(os.path.join(root, "2", "env")) and check_tree(second, _expected()) == ""
    assert "lib/x.py changed; making it again" in capsys.readouterr().err
    assert sorted(os.listdir(root)) == ["1", "2", "\u00b2"]  # no private folder left; the old one kept


def test_a_generation_another_job_placed_first_is_used_or_passed_over(tmp_path):
    """Two jobs build at once: the loser's rename fails; it uses the winner's generation if it checks, else
    places its own as the next free number."""
    root = tmp_path / "pythons" / "sha"

    def racing_bad(dest):  # meanwhile "another job" placed a generation that does not check
        _make(dest)
        _make(str(root / "1" / "prefix"))
        (root / "1" / "prefix" / "lib" / "x.py").write_bytes(b"other")

    tree = cached_tree(str(root), "prefix", _expected(), racing_bad, "the interpreter s")
    assert tree == os.path.realpath(root / "2" / "prefix") and check_tree(tree, _expected()) == ""

    def racing_good(dest):
        _make(dest)
        _make(str(root / "3" / "prefix"))

    (root / "2" / "prefix" / "lib" / "x.py").write_bytes(b"changed")
    assert cached_tree(str(root), "prefix", _expected(), racing_good, "the interpreter s") == os.path.realpath(
        root / "3" / "prefix"
    )
    assert sorted(os.listdir(root)) == ["1", "2", "3"]


def test_a_tree_that_cannot_be_made_in_the_cache_gives_a_private_copy_and_leaves_nothing(tmp_path, capsys):
    root = tmp_path / "envs" / "key"

    def failing(dest):
        os.makedirs(dest)
        raise Failed("uv failed (exit 2): No space left on device")

    with pytest.raises(_NotCached):
        cached_tree(str(root), "env", _expected(), failing, "the env e")
    assert "could not be made in the instance cache (uv failed" in capsys.readouterr().err
    assert os.listdir(root) == []

    def wrong(dest):
        _make(dest)
        (Path(dest) / "extra").write_text("")

    with pytest.raises(_NotCached):
        cached_tree(str(root), "env", _expected(), wrong, "the env e")
    assert "is not what the manifest lists: extra was added" in capsys.readouterr().err
    assert os.listdir(root) == []


def test_a_generation_whose_path_is_a_link_is_checked_and_used_where_it_leads(tmp_path):
    """What is checked is what the job links to: the real path, not a name another job can re-point."""
    root = tmp_path / "envs" / "key"
    elsewhere = tmp_path / "elsewhere"
    _make(str(elsewhere / "env"))
    root.mkdir(parents=True)
    (root / "1").symlink_to(elsewhere)
    assert cached_tree(str(root), "env", _expected(), _make, "the env e") == str(elsewhere / "env")
