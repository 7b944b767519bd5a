"""The lock file model: determinism, self-validation on read, readable diffs (pure logic)."""

import pytest

from repro.errors import LockFileError
from repro.model.lock import PlatformLock, diff_packages, parse_lock
from tests.helpers import SHA, pkg, sample_lock


def test_roundtrip_is_exact_and_deterministic(tmp_path):
    lock = sample_lock()
    text = lock.to_toml()
    assert text == sample_lock().to_toml()
    back = parse_lock(text, tmp_path / "flow.repro.lock")
    assert back == lock and back.to_toml() == text
    # packages sorted by name whatever order they were given in
    assert text.index('name = "numpy"') < text.index('name = "requests"')
    assert "created" not in text and "time" not in text


def test_one_package_change_is_a_small_diff():
    a, b = sample_lock("1.26.4").to_toml().splitlines(), sample_lock("1.26.3").to_toml().splitlines()
    changed = [x for x, y in zip(a, b) if x != y]
    assert len(a) == len(b) and len(changed) <= 7  # ids, the pin, and the package's own lines


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace('version = "1.26.4"', 'version = "1.26.5"', 1), "does not match"),
    (lambda t: t.replace("b" * 64, "c" * 64), "env_id does not match the packages"),
    (lambda t: t.replace("b" * 64, "xyz"), "is not 64 hex digits"),
    (lambda t: t.replace("size = 123", 'size = "big"', 1), "'size' must be int"),
    (lambda t: t.replace("version = 1\n", "version = 99\n"), "newer than this repro"),
    (lambda t: t + "\n[broken\n", "not valid TOML"),
    (lambda t: t.replace('flow = "MyFlow"\n', ""), "missing key 'flow'"),
])
def test_hand_edited_or_corrupt_locks_are_refused_with_the_file_named(tmp_path, edit, match):
    path = tmp_path / "flow.repro.lock"
    with pytest.raises(LockFileError, match=match) as err:
        parse_lock(edit(sample_lock().to_toml()), path)
    assert str(path) in str(err.value)


def test_package_diff_says_old_new_and_stated_or_transitive():
    old = PlatformLock("linux-64", "3.11.7", (pkg("numpy", "1.26.4"), pkg("six", "1.16.0")))
    new = PlatformLock("linux-64", "3.11.7", (pkg("numpy", "2.1.3"), pkg("idna", "3.10")))
    assert diff_packages(old, new, {"numpy"}) == [
        "+ idna 3.10 (transitive)", "~ numpy 1.26.4 -> 2.1.3 (stated)", "- six 1.16.0 (transitive)"]
