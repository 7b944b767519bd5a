"""The lock file model: determinism, self-validation on read, readable diffs (pure logic)."""

from dataclasses import replace
from pathlib import Path

import pytest

from metaflow_repro.errors import LockFileError
from metaflow_repro.model.lock import PlatformLock, diff_packages, parse_lock
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


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda t: t.replace('version = "1.26.4"', 'version = "1.26.5"', 1), "does not match"),
        (lambda t: t.replace("b" * 64, "c" * 64), "env_id does not match the packages"),
        (lambda t: t.replace("b" * 64, "xyz"), "is not 64 hex digits"),
        (
            lambda t: t.replace("size = 123", 'size = "big"', 1),
            "'steps.start.platforms.linux-64.packages.0.size' must be int",
        ),
        (lambda t: t.replace("version = 1\n", "version = 99\n"), "newer than this repro"),
        (lambda t: t + "\n[broken\n", "not valid TOML"),
        (lambda t: t.replace('flow = "MyFlow"\n', ""), "missing key 'flow'"),
    ],
)
def test_hand_edited_or_corrupt_locks_are_refused_with_the_file_named(tmp_path, edit, match):
    path = tmp_path / "flow.repro.lock"
    with pytest.raises(LockFileError, match=match) as err:
        parse_lock(edit(sample_lock().to_toml()), path)
    assert str(path) in str(err.value)


def test_package_diff_says_old_new_and_stated_or_transitive():
    old = PlatformLock("linux-64", "3.11.7", (pkg("numpy", "1.26.4"), pkg("six", "1.16.0")))
    new = PlatformLock("linux-64", "3.11.7", (pkg("numpy", "2.1.3"), pkg("idna", "3.10")))
    assert _text_diff_packages(old, new, {"numpy"}) == [
        "+ idna 3.10 (transitive)",
        "~ numpy 1.26.4 -> 2.1.3 (stated)",
        "- six 1.16.0 (transitive)",
    ]


# -- the codec in full, its ids and its diffs (pure; files only through tmp_path) ---------------

from metaflow_repro.errors import LockFileError as _LockFileError  # noqa: E402
from metaflow_repro.model.lock import (  # noqa: E402
    Lock,
    Package,
    StepLock,
    diff_requirements,
    diff_spec,
    env_id_of,
    lock_path,
    read_lock,
    safe_file_name,
    write_lock,
)
from metaflow_repro.model.spec import Declaration, merge  # noqa: E402

GOLDEN_LOCK = """# repro lock for flow.py (flow MyFlow).
# Written by `repro lock flow.py`; commit it, do not edit it by hand.
version = 1
flow = "MyFlow"
file = "flow.py"

[steps.c]
spec_id = "{c_id}"
kind = "conda"
source = "none"
python = "3.11"
disabled = true

[steps.c.libraries]

[steps.c.implicit]

[steps.start]
spec_id = "{start_id}"
kind = "conda"
source = "pypi"
python = "3.11"
disabled = false
channels = [
    "conda-forge",
]

[steps.start.libraries]
numpy = "1.26.4"

[steps.start.implicit]
requests = "2.32.3"

[steps.start.platforms.linux-64]
env_id = "{env_id}"
python = "3.11.7"

[[steps.start.platforms.linux-64.packages]]
name = "numpy"
version = "1.26.4"
source = "pypi"
file = "numpy-1.26.4-py3-none-any.whl"
url = "https://example.invalid/numpy-1.26.4-py3-none-any.whl"
sha256 = "{b}"
size = 123

[[steps.start.platforms.linux-64.packages]]
name = "requests"
version = "2.32.3"
source = "pypi"
file = "requests-2.32.3-py3-none-any.whl"
url = "https://example.invalid/requests-2.32.3-py3-none-any.whl"
sha256 = "{a}"
size = 123
"""


def golden_lock() -> Lock:
    base = sample_lock()
    start = base.steps["start"]
    start = StepLock(
        start.step,
        start.kind,
        start.source,
        start.python,
        start.libraries,
        start.implicit,
        ("conda-forge",),
        False,
        start.platforms,
    )
    return Lock(base.flow, base.file, {"start": start, "c": base.steps["c"]})


def test_the_lock_file_text_in_full(tmp_path):
    lock = golden_lock()
    want = GOLDEN_LOCK.format(
        c_id=lock.steps["c"].spec_id,
        start_id=lock.steps["start"].spec_id,
        env_id=lock.steps["start"].platforms["linux-64"].env_id,
        a="a" * 64,
        b="b" * 64,
    )
    assert lock.to_toml() == want
    assert parse_lock(want, tmp_path / "flow.repro.lock") == lock


def test_ids_are_pinned_because_committed_locks_carry_them():
    """env_id and spec_id are written into committed locks; a change in how they are computed
    makes every lock in every project stale, so they are pinned here."""
    import hashlib
    import json

    packages = (pkg("six", "1.0"), pkg("idna", "3.10", "c" * 64))
    payload = {
        "platform": "linux-64",
        "python": "3.11.7",
        "implementation": "cpython",
        "packages": [[p.name, p.version, p.source, p.file, p.sha256] for p in sorted(packages)],
    }
    want = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert env_id_of("linux-64", "3.11.7", packages) == want == env_id_of("linux-64", "3.11.7", packages[::-1])
    assert PlatformLock("linux-64", "3.11.7", packages).env_id == want
    assert env_id_of("linux-64", "3.11.8", packages) != want and env_id_of("osx-arm64", "3.11.7", packages) != want
    moved = Package("six", "1.0", "pypi", "six-1.0-py3-none-any.whl", "https://mirror.invalid/x.whl", SHA, 999)
    assert env_id_of("linux-64", "3.11.7", (moved, packages[1])) == want  # url and size are not identity
    start = sample_lock().steps["start"]
    assert start.spec_id == start.as_spec("AnyFlow").spec_id
    spec = merge(
        "MyFlow",
        "start",
        [],
        [Declaration("conda", {"numpy": "1.26.4"}, python="3.11")],
        default_python="3.11.7",
        conda_source="pypi",
    )
    assert spec.spec_id == start.spec_id  # the lock's recorded declaration is the spec's
    back = StepLock.from_spec(spec, {"z": 1, "a": 2})
    assert list(back.platforms) == ["a", "z"] and back.as_spec("MyFlow") == spec
    assert (
        back.step,
        back.kind,
        back.source,
        back.python,
        back.libraries,
        back.implicit,
        back.channels,
        back.disabled,
    ) == ("start", "conda", "pypi", "3.11", (("numpy", "1.26.4"),), (("requests", "2.32.3"),), (), False)


def test_platform_lock_orders_packages_and_indexes_them_by_name():
    pl = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.0"), pkg("idna", "3.10")))
    assert [p.name for p in pl.packages] == ["idna", "six"]
    assert pl.by_name() == {"idna": pkg("idna", "3.10"), "six": pkg("six", "1.0")}
    assert pkg("six", "1.0").as_dict() == {
        "name": "six",
        "version": "1.0",
        "source": "pypi",
        "file": "six-1.0-py3-none-any.whl",
        "url": "https://example.invalid/six-1.0-py3-none-any.whl",
        "sha256": SHA,
        "size": 123,
    }


def test_lock_path_write_and_read(tmp_path):
    assert lock_path(tmp_path / "my_flow.py") == tmp_path / "my_flow.repro.lock"
    assert lock_path("flows/x.py") == Path("flows/x.repro.lock")
    path = tmp_path / "flow.repro.lock"
    assert read_lock(path) is None
    assert write_lock(sample_lock(), path) is True
    assert write_lock(sample_lock(), path) is False  # unchanged: nothing written
    assert read_lock(path) == sample_lock()
    assert write_lock(sample_lock("1.26.3"), path) is True and read_lock(path) == sample_lock("1.26.3")
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(_LockFileError, match=r"flow.repro.lock: cannot read the lock file"):
        read_lock(path)


@pytest.mark.parametrize(
    "name,ok",
    [
        ("six-1.0-py3-none-any.whl", True),
        ("a", True),
        ("_x+y.tar.gz", True),
        ("../x.whl", False),
        ("a/b.whl", False),
        (".hidden", False),
        ("-x", False),
        ("a..b.whl", False),
        ("", False),
        (None, False),
        ("a b.whl", False),
    ],
)
def test_safe_file_names(name, ok):
    if ok:
        assert safe_file_name(name, "here") == name
    else:
        with pytest.raises(_LockFileError) as err:
            safe_file_name(name, "here")
        assert str(err.value) == f"here: {name!r} is not a plain file name"


LOCK_TEXT = sample_lock().to_toml()


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda t: t.replace("version = 1\n", "version = 0\n"),
            "{p}: unknown lock format version 0. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace("version = 1\n", "version = 2\n"),
            "{p}: lock format version 2 is newer than this repro understands (1); upgrade repro",
        ),
        (
            lambda t: t.replace("version = 1\n", "version = true\n"),
            "{p}: 'version' must be int, got True. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace("version = 1\n", 'version = "1"\n'),
            "{p}: 'version' must be int, got '1'. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('flow = "MyFlow"\n', "flow = 3\n"),
            "{p}: 'flow' must be str, got 3. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('file = "flow.py"\n', ""),
            "{p}: missing key 'file'. Regenerate it with `repro lock flow.py`.",
        ),
        (lambda t: t.split("[steps")[0], "{p}: missing key 'steps'. Regenerate it with `repro lock flow.py`."),
        (
            lambda t: t.split("[steps")[0] + "steps = 3\n",
            "{p}: 'steps' must be a table/object, got 3. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.split("[steps")[0] + "steps = { c = 3 }\n",
            "{p}: 'steps.c' must be a table/object, got 3. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace("[steps.c.libraries]\n", "platforms = 3\n[steps.c.libraries]\n"),
            "{p}: 'steps.c.platforms' must be a table/object, got 3. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace("[steps.c.libraries]\n", "platforms = { x = 3 }\n[steps.c.libraries]\n"),
            "{p}: 'steps.c.platforms.x' must be a table/object, got 3. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.split("[[steps.start")[0] + "packages = [3]\n",
            "{p}: 'steps.start.platforms.linux-64.packages.0' must be a table/object, got 3. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.split("[[steps.start")[0] + "packages = 3\n",
            "{p}: 'steps.start.platforms.linux-64.packages' must be a list, got 3. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('name = "numpy"\nversion = "1.26.4"', 'version = "1.26.4"', 1),
            "{p}: missing key 'steps.start.platforms.linux-64.packages.0.name'. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('python = "3.11.7"\n', ""),
            "{p}: missing key 'steps.start.platforms.linux-64.python'. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('env_id = "', 'env_idx = "'),
            "{p}: unknown key 'steps.start.platforms.linux-64.env_idx'. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('sha256 = "' + "b" * 64, 'sha256 = "' + "B" * 64),
            "{p}: 'steps.start.platforms.linux-64.packages.0.sha256' 'BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB' is not 64 hex digits. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('file = "numpy-1.26.4-py3-none-any.whl"', 'file = "../numpy.whl"'),
            "{p}: 'steps.start.platforms.linux-64.packages.0.file' '../numpy.whl' is not a plain file name. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace("size = 123", "size = true", 1),
            "{p}: 'steps.start.platforms.linux-64.packages.0.size' must be int, got True. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('kind = "conda"\nsource = "pypi"', 'source = "pypi"'),
            "{p}: missing key 'steps.start.kind'. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace("disabled = false", 'disabled = "no"'),
            "{p}: 'steps.start.disabled' must be bool, got 'no'. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('numpy = "1.26.4"\n', "numpy = 1\n"),
            "{p}: 'steps.start.libraries.numpy' must be str, got 1. Regenerate it with `repro lock flow.py`.",
        ),
        (
            lambda t: t.replace('requests = "2.32.3"\n', 'requests = "2.32.4"\n'),
            "{p}: step 'start': spec_id does not match the declaration recorded with it (the file was edited by hand or "
            "merged badly). Regenerate it with `repro lock flow.py`.",
        ),
        (lambda t: t.replace("size = 123", "size = 124", 1), None),  # size is not identity: still valid
    ],
)
def test_every_refusal_says_where_and_how_to_regenerate(tmp_path, edit, message):
    path = tmp_path / "flow.repro.lock"
    text = edit(LOCK_TEXT)
    if message is None:
        parse_lock(text, path)
        return
    with pytest.raises(_LockFileError) as err:
        parse_lock(text, path)
    assert str(err.value) == message.format(p=path)


def _text_diff_packages(*a):
    return [str(c) for c in diff_packages(*a)]


def _text_diff_requirements(*a):
    return [str(c) for c in diff_requirements(*a)]


def _text_diff_spec(*a):
    return [str(c) for c in diff_spec(*a)]


def test_requirement_and_spec_diffs():
    assert _text_diff_requirements({"a": "1", "b": "2", "c": "3"}, {"b": "2", "c": "4", "d": "5"}) == [
        "- a 1",
        "~ c 3 -> 4",
        "+ d 5",
    ]
    assert _text_diff_requirements({}, {}) == []
    locked = sample_lock().steps["start"]
    same = merge(
        "MyFlow",
        "start",
        [],
        [Declaration("conda", {"numpy": "1.26.4"}, python="3.11")],
        default_python="3.11.7",
        conda_source="pypi",
    )
    assert _text_diff_spec(locked, same) == []
    other = merge(
        "MyFlow",
        "start",
        [],
        [Declaration("pypi", {"numpy": "2.1.3", "six": "1.0"}, python="3.12", channels=["x"])],
        default_python="3.11.7",
        conda_source="pypi",
    )
    assert _text_diff_spec(locked, other) == [
        "~ kind conda -> pypi",
        "~ python 3.11 -> 3.12",
        "~ channels [] -> ['x']",
        "~ numpy 1.26.4 -> 2.1.3",
        "+ six 1.0",
    ]
    off = merge(
        "MyFlow",
        "start",
        [],
        [Declaration("conda", {"numpy": "1.26.4"}, python="3.11", disabled=True)],
        default_python="3.11.7",
        conda_source="pypi",
    )
    assert _text_diff_spec(locked, off) == ["~ source pypi -> none", "~ disabled False -> True", "- requests 2.32.3"]


def test_package_diff_of_files_pythons_and_missing_sides():
    a = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.0"),))
    b = PlatformLock("linux-64", "3.11.8", (pkg("six", "1.0", "c" * 64),))
    assert _text_diff_packages(a, b) == [
        "~ python 3.11.7 -> 3.11.8",
        "~ six 1.0: file six-1.0-py3-none-any.whl (aaaaaaaaaaaa) -> "
        "six-1.0-py3-none-any.whl (cccccccccccc) (transitive)",
    ]
    assert _text_diff_packages(None, a, {"six"}) == ["+ six 1.0 (stated)"]
    assert _text_diff_packages(a, None) == ["- six 1.0 (transitive)"]
    assert _text_diff_packages(a, a) == [] and _text_diff_packages(None, None) == []


@pytest.mark.parametrize("key", ["name", "version", "source", "file", "url", "sha256", "size"])
def test_a_package_missing_any_key_is_named(tmp_path, key):
    path = tmp_path / "flow.repro.lock"
    lines = LOCK_TEXT.split("[[steps.start.platforms.linux-64.packages]]\n")
    first = "".join(line for line in lines[1].splitlines(keepends=True) if not line.startswith(f"{key} ="))
    text = (
        lines[0]
        + "[[steps.start.platforms.linux-64.packages]]\n"
        + first
        + "[[steps.start.platforms.linux-64.packages]]\n"
        + lines[2]
    )
    with pytest.raises(_LockFileError) as err:
        parse_lock(text, path)
    assert str(err.value) == (
        f"{path}: missing key 'steps.start.platforms.linux-64.packages.0.{key}'. "
        "Regenerate it with `repro lock flow.py`."
    )


@pytest.mark.parametrize("key", ["spec_id", "kind", "source", "python", "disabled", "libraries", "implicit"])
def test_a_step_missing_any_key_is_named(tmp_path, key):
    path = tmp_path / "flow.repro.lock"
    head, start = LOCK_TEXT.split("[steps.start]\n")
    own, rest = start.split("\n[", 1)  # the step's own keys come before its sub-tables
    kept = [line for line in own.splitlines(keepends=True) if not line.startswith(f"{key} =")]
    text = head + "[steps.start]\n" + "".join(kept) + "\n[" + rest
    if key in ("libraries", "implicit"):
        text = text.replace(f"[steps.start.{key}]\n", "").replace(
            'numpy = "1.26.4"\n' if key == "libraries" else 'requests = "2.32.3"\n', "", 1
        )
    with pytest.raises(_LockFileError) as err:
        parse_lock(text, path)
    assert str(err.value) == f"{path}: missing key 'steps.start.{key}'. Regenerate it with `repro lock flow.py`."


def test_implicit_pins_must_be_strings_too(tmp_path):
    path = tmp_path / "flow.repro.lock"
    with pytest.raises(_LockFileError) as err:
        parse_lock(LOCK_TEXT.replace('requests = "2.32.3"\n', "requests = 2\n"), path)
    assert str(err.value) == (
        f"{path}: 'steps.start.implicit.requests' must be str, got 2. Regenerate it with `repro lock flow.py`."
    )


def test_package_diff_goes_on_past_unchanged_packages():
    a = PlatformLock("linux-64", "3.11.7", (pkg("idna", "3.10"), pkg("six", "1.0")))
    b = PlatformLock("linux-64", "3.11.7", (pkg("idna", "3.10"), pkg("six", "1.1")))
    assert _text_diff_packages(a, b) == ["~ six 1.0 -> 1.1 (transitive)"]


def test_a_locked_steps_spec_keeps_its_channels():
    start = golden_lock().steps["start"]
    assert start.as_spec("MyFlow").channels == ("conda-forge",)
    assert start.spec_id != sample_lock().steps["start"].spec_id


def _built_lock():
    from metaflow_repro.model.lock import Built, Lock, StepLock

    base = sample_lock()
    sdist = pkg("docopt", "0.6.2", "d" * 64)
    sdist = replace(sdist, file="docopt-0.6.2.tar.gz")
    built = replace(
        pkg("docopt", "0.6.2", "e" * 64), built=Built("3.11.7", sdist, (pkg("setuptools", "80.0.0", "f" * 64),))
    )
    step: StepLock = base.steps["start"]
    pl = step.platforms["linux-64"]
    pl = PlatformLock(pl.platform, pl.python, (*pl.packages, built))
    return Lock(base.flow, base.file, {"start": replace(step, platforms={"linux-64": pl})}), built


def test_a_wheel_built_from_an_sdist_keeps_both_digests_and_its_build_environment(tmp_path):
    lock, built = _built_lock()
    text = lock.to_toml()
    back = parse_lock(text, tmp_path / "flow.repro.lock")
    assert back == lock and back.to_toml() == text
    got = back.steps["start"].platforms["linux-64"].by_name()["docopt"]
    assert got.built is not None and got.built.sdist.sha256 == "d" * 64 and got.sha256 == "e" * 64
    assert got.built.python == "3.11.7" and [p.name for p in got.built.requires] == ["setuptools"]
    # the env id is the installed wheel's: a different wheel built from the same sdist is another env
    other = PlatformLock("linux-64", "3.11.7", (replace(got, sha256="9" * 64),))
    assert other.env_id != PlatformLock("linux-64", "3.11.7", (got,)).env_id
    # a lock written before sdist builds (no `built` anywhere) still reads, to the same ids
    assert "built" not in sample_lock().to_toml()
    assert parse_lock(sample_lock().to_toml(), tmp_path / "old.repro.lock") == sample_lock()


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda t: t.replace(
                'python = "3.11.7"\n\n[steps.start.platforms.linux-64.packages.built.sdist]',
                'python = "3.11.7"\nsecret = 1\n\n[steps.start.platforms.linux-64.packages.built.sdist]',
            ),
            "secret",
        ),
        (lambda t: t.replace("d" * 64, "d" * 10), "built.sdist.sha256"),
        (lambda t: t.replace('file = "docopt-0.6.2.tar.gz"', 'file = "../docopt-0.6.2.tar.gz"'), "built.sdist.file"),
        (
            lambda t: t.replace(
                'python = "3.11.7"\n\n[steps.start.platforms.linux-64.packages.built.sdist]',
                "\n[steps.start.platforms.linux-64.packages.built.sdist]",
            ),
            "missing key '.*built.python'",
        ),
    ],
)
def test_a_bad_build_record_in_a_lock_is_refused_naming_the_field(tmp_path, edit, match):
    lock, _ = _built_lock()
    text = lock.to_toml()
    edited = edit(text)
    assert edited != text
    with pytest.raises(LockFileError, match=match):
        parse_lock(edited, tmp_path / "flow.repro.lock")


def test_a_built_wheel_is_exported_to_pylock_as_its_sdist():
    import tomllib

    from metaflow_repro.model.export import to_pylock

    lock, built = _built_lock()
    doc = tomllib.loads(to_pylock(lock.steps["start"].platforms["linux-64"], "MyFlow", "start"))
    entry = next(p for p in doc["packages"] if p["name"] == "docopt")
    assert "wheels" not in entry  # the wheel repro built is on no index
    assert entry["sdist"] == {
        "name": "docopt-0.6.2.tar.gz",
        "url": built.url,
        "size": 123,
        "hashes": {"sha256": "d" * 64},
    }
    assert all("wheels" in p for p in doc["packages"] if p["name"] != "docopt")


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "six @ file:///x\n--find-links /tmp/evil\nsix"),
        ("name", "six; python_version > '3'"),
        ("name", "-e ."),
        ("name", ".hidden"),
        ("name", ""),
        ("version", "1.0\n--index-url http://evil"),
        ("version", "1.0 ; os_name == 'nt'"),
        ("version", "1.0@file:///x"),
        ("version", ">=1.0"),
        ("version", "1.*"),
        ("version", "1.0\x00"),
    ],
)
def test_a_package_name_or_version_that_is_not_one_is_refused_naming_the_field(field, value):
    from metaflow_repro.model import validate as v
    from metaflow_repro.model.lock import Package

    doc = {**pkg("six", "1.16.0").as_dict(), field: value}
    with pytest.raises(v.Invalid, match="is not an exact package version" if field == "version" else "package name"):
        Package.from_dict(doc, v.At("flow.repro.lock", "packages.0"))
    try:
        Package.from_dict(doc, v.At("flow.repro.lock", "packages.0"))
    except v.Invalid as exc:
        assert exc.path == f"packages.0.{field}"


@pytest.mark.parametrize(
    "name, version",
    [
        ("scikit-learn", "1.5.2"),
        ("zope.interface", "6.0"),
        ("typing_extensions", "4.12.2"),
        ("_libgcc_mutex", "0.1"),  # conda
        ("openssl", "1.1.1w"),  # conda
        ("libgcc-ng", "13.2.0"),
        ("tzdata", "2024a"),
        ("pkg", "1!2.0.post1+local.3"),
        ("pkg", "1.0rc1.dev2"),
        ("pkg", "4.5_1"),  # conda
    ],
)
def test_real_pypi_and_conda_names_and_versions_decode(name, version):
    from metaflow_repro.model import validate as v
    from metaflow_repro.model.lock import Package

    doc = {**pkg("six", "1.16.0").as_dict(), "name": name, "version": version}
    got = Package.from_dict(doc, v.At("flow.repro.lock", "packages.0"))
    assert (got.name, got.version) == (name, version)


_CONDA_LOCK = """\
version: 1
metadata:
  content_hash: {linux-64: "0"}
  channels: [{url: conda-forge, used_env_vars: []}]
  platforms: [linux-64]
  sources: [environment.yml]
package:
- name: %s
  version: %s
  manager: conda
  platform: linux-64
  dependencies: {}
  url: https://conda.anaconda.org/conda-forge/noarch/six-1.16.0-pyh6c4a22f_0.tar.bz2
  hash: {md5: %s, sha256: %s}
  category: main
  optional: false
"""


@pytest.mark.parametrize(
    "name, version, match",
    [
        ('"six\\n--find-links /tmp/evil"', "1.16.0", "package name"),
        ("six", '"1.16.0 --hash=x"', "exact package version"),
    ],
)
def test_a_conda_lock_file_with_a_bad_name_or_version_is_refused_before_any_fetch(tmp_path, name, version, match):
    from metaflow_repro.env import condalock
    from metaflow_repro.model import validate as v

    path = tmp_path / "conda-lock.yml"
    path.write_text(_CONDA_LOCK % (name, version, "a" * 32, "b" * 64))
    with pytest.raises(v.Invalid, match=match):
        condalock.read(path, None, "import")  # type: ignore[arg-type]  # never reaches the cache


def test_a_step_lock_carries_every_field_of_the_declaration_both_ways():
    """from_spec and as_spec carry the same fields; a spec with none of them at its default survives the trip."""
    spec = merge(
        "MyFlow",
        "b",
        [Declaration("conda", {"six": "1.16.0"}, channels=["bioconda"])],
        [Declaration("pypi", {"idna": "3.10"}, python="3.12")],
        default_python="3.11.7",
        conda_source="conda",
        s3_datastore=True,
    )
    assert spec.pip and spec.implicit and spec.channels and spec.source == "conda"
    lock = StepLock.from_spec(spec, {})
    assert lock.as_spec("MyFlow") == spec and lock.pip == spec.pip and lock.spec_id == spec.spec_id
    off = StepLock.from_spec(merge("F", "c", [], [Declaration("pypi", {}, disabled=True)], "3.11.7", None), {})
    assert off.disabled and off.as_spec("F").disabled
