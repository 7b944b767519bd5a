"""The containment helper: every path built from stored data stays inside its root."""

import os

import pytest

from metaflow_repro.paths import OutsideRoot, check_relative, inside


@pytest.mark.parametrize(
    "rel",
    ["/etc/passwd", "../x", "a/../../x", "a/..", "..", "C:\\x", "C:x", "c:/x", "..\\x", "a\\b", "", "a\0b", 5, None],
)
def test_refused(tmp_path, rel):
    with pytest.raises(OutsideRoot):
        inside(tmp_path, rel, "flow_file")


def test_the_message_names_what_and_the_value(tmp_path):
    with pytest.raises(OutsideRoot, match=r"flow_file '\.\./x' is not a relative path"):
        inside(tmp_path, "../x", "flow_file")


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.py").write_text("x")
    os.symlink(tmp_path / "secret.py", root / "flow.py")
    os.symlink(tmp_path, root / "up")
    with pytest.raises(OutsideRoot, match="outside"):
        inside(root, "flow.py", "flow_file")
    with pytest.raises(OutsideRoot, match="outside"):
        inside(root, "up/secret.py", "flow_file")


def test_plain_relative_paths_are_kept(tmp_path):
    (tmp_path / "a").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "link")  # a link that stays inside is fine
    assert inside(tmp_path, "a/flow.py", "f") == (tmp_path / "a" / "flow.py").resolve()
    assert inside(tmp_path, "link/flow.py", "f") == (tmp_path / "a" / "flow.py").resolve()
    assert check_relative("./a/b.py", "f") == "./a/b.py"
