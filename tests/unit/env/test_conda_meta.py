"""Where a conda package would write (``metaflow_repro.env.conda_meta``): the paths its info documents name
(paths.json, link.json's entry points, has_prefix, files), its links, and an env's packages together, all
checked before rattler sees them. Table-driven cases, and the link resolver held against the kernel."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaflow_repro.env.conda_meta import (
    DIR,
    FILE,
    HARDLINK,
    MAX_INFO_BYTES,
    SYMLINK,
    Member,
    PackageMeta,
    env_problems,
    member_problems,
    normal,
    path_problem,
    physical,
    read_meta,
    resolve,
)

EVIL = "../../../../tmp/x/important.txt"  # the package: rattler deleted that file


def paths_json(*paths: object) -> bytes:
    return json.dumps({"paths": [{"_path": p, "path_type": "hardlink"} for p in paths], "paths_version": 1}).encode()


def link_json(*entry_points: str) -> bytes:
    return json.dumps({"noarch": {"type": "python", "entry_points": list(entry_points)}}).encode()


@pytest.mark.parametrize(
    "path, words",
    [
        ("lib/x.so", ""),
        ("./share/x", ""),
        ("a..b/c..", ""),
        ("", "not a path"),
        ("./", "not a path"),
        (None, "not a path"),
        (7, "not a path"),
        ("/etc/passwd", "absolute"),
        ("\\\\server\\x", "absolute"),
        ("C:/x", "absolute"),
        ("..", "'..'"),
        ("a/../../b", "'..'"),
        ("a\\..\\b", "'..'"),
        (EVIL, "'..'"),
        ("a\0b", "NUL"),
    ],
)
def test_a_path_inside_a_prefix(path, words):
    found = path_problem(path)
    assert (words in found and found) if words else found == "", found


@pytest.mark.parametrize(
    "info, words",
    [
        ({"info/paths.json": paths_json("lib/ok.py", EVIL)}, f"info/paths.json: {EVIL!r} has a '..' component"),
        ({"info/paths.json": paths_json("/tmp/x/important.txt")}, "is an absolute path"),
        ({"info/paths.json": json.dumps({"paths": [{"path_type": "hardlink"}]}).encode()}, "None is not a path"),
        ({"info/paths.json": b"{not json"}, "info/paths.json is not JSON"),
        ({"info/paths.json": b'{"paths": "x"}'}, "no list of 'paths' entries"),
        ({"info/link.json": link_json("ok = m:f", "../../evil = m:f")}, "'../../evil' is not a plain command name"),
        ({"info/link.json": link_json("/tmp/x = m:f")}, "'/tmp/x' is not a plain command name"),
        ({"info/link.json": link_json("sub/cmd = m:f")}, "'sub/cmd' is not a plain command name"),
        ({"info/link.json": link_json(".. = m:f")}, "'..' is not a plain command name"),
        ({"info/link.json": b'{"noarch": {"type": "python", "entry_points": [1]}}'}, "malformed 'noarch' entry"),
        ({"info/has_prefix": b"/opt/build text ../../etc/profile\n"}, "info/has_prefix: '../../etc/profile'"),
        ({"info/has_prefix": b'"/opt/b" text "/etc/profile"\n'}, "'/etc/profile' is an absolute path"),
        ({"info/has_prefix": b"/etc/profile\n"}, "'/etc/profile' is an absolute path"),  # the old one-column form
        ({"info/has_prefix": b"a b\n"}, "malformed line"),
        ({"info/files": b"bin/x\n/etc/passwd\n"}, "info/files: '/etc/passwd' is an absolute path"),
        ({"info/no_link": b"../x\n"}, "info/no_link: '../x' has a '..'"),
        ({"info/files": b"\xff\n"}, "not UTF-8"),
    ],
)
def test_a_path_an_info_document_names_outside_the_prefix_is_found(info, words):
    _, problems = read_meta("x-1-0.tar.bz2", [], info)
    assert len(problems) == 1 and words in problems[0], problems


DEEP = b"[" * 100000  # json.loads raises RecursionError on it


@pytest.mark.parametrize("name", ["info/paths.json", "info/link.json", "info/index.json"])
def test_a_deeply_nested_info_document_is_a_finding_not_a_crash(name):
    _, problems = read_meta("x-1-0.tar.bz2", [], {name: DEEP})
    assert problems == [f"{name} is not JSON (nested deeper than 64 levels)"], problems


@pytest.mark.parametrize(
    "member, words",
    [
        (Member("info/paths.json", FILE, size=MAX_INFO_BYTES + 1), "more than the 67108864 bytes repro reads"),
        (Member("./info//paths.json", FILE, size=MAX_INFO_BYTES + 1), "info/paths.json is 67108865 bytes"),
        (Member("info/has_prefix", FILE, size=10), "info/has_prefix could not be read"),
        (Member("info/paths.json", SYMLINK, "../share/list.json"), "info/paths.json is a symlink, not a regular"),
        (Member("info/files", HARDLINK, "share/list"), "info/files is a hardlink, not a regular file"),
    ],
)
def test_an_info_document_in_the_archive_that_was_not_read_is_a_finding(member, words):
    """rattler reads every info document it finds: one repro could not read (too large, a link) refuses."""
    _, problems = read_meta("x-1-0.tar.bz2", [member], {})
    assert len(problems) == 1 and words in problems[0], problems


@pytest.mark.parametrize(
    "members, twice",
    [
        ([Member("info/paths.json", FILE), Member("info/paths.json", FILE)], "info/paths.json"),
        ([Member("info/paths.json", FILE), Member("./info/paths.json", FILE)], "info/paths.json"),
        ([Member("lib/x", FILE), Member("lib/x", SYMLINK, "y")], "lib/x"),
        ([Member("lib", DIR), Member("lib", SYMLINK, ".")], "lib"),
        ([Member("lib/", DIR), Member("lib", DIR)], ""),  # the same folder twice is harmless
    ],
)
def test_two_members_extracted_to_one_path_are_a_finding(members, twice):
    found = [p for p in member_problems(members) if "times" in p]
    assert found == ([f"member {twice!r} is in the archive 2 times"] if twice else []), found


def test_a_clean_package_has_no_findings_and_its_meta_says_where_it_writes():
    info = {
        "info/index.json": b'{"name": "x", "noarch": "python"}',
        "info/paths.json": paths_json("site-packages/x/__init__.py", "python-scripts/x"),
        "info/link.json": link_json("x-cli = x.cli:main"),
        "info/has_prefix": b'/opt/build text "site-packages/x/__init__.py"\n',
        "info/files": b"site-packages/x/__init__.py\npython-scripts/x\n",
    }
    members = [Member("site-packages/x/__init__.py", FILE), Member("site-packages/y", SYMLINK, "x")]
    meta, problems = read_meta("x-1-0.tar.bz2", members, info)
    assert problems == [] and meta.noarch_python and meta.links == (("site-packages/y", "x"),)
    assert ("info/link.json entry point", "bin/x-cli") in meta.paths
    assert PackageMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    assert env_problems([meta], "3.11.7") == []


def test_a_path_through_the_packages_own_link_out_of_the_prefix_is_found():
    members = [Member("share/up", SYMLINK, "../.."), Member("share/ok", SYMLINK, "../lib")]
    _, problems = read_meta("x.tar.bz2", members, {"info/paths.json": paths_json("share/ok/a", "share/up/x")})
    assert problems == [
        "info/paths.json: 'share/up/x' leads outside the prefix (through '..' or a symbolic link, or a link loop)"
    ]


@pytest.mark.parametrize(
    "members, words",
    [
        ([Member("../escaped", FILE)], "'..' component"),
        ([Member("/etc/evil", FILE)], "absolute path"),
        ([Member("share/link", SYMLINK, "../../../etc/passwd")], "leaves the prefix"),
        ([Member("share/abs", SYMLINK, "/etc/passwd")], "absolute path"),
        ([Member("share/h", HARDLINK, "../x")], "hard link"),
        # lexically inside, physically not: d is the root, so d/e -> .. is the root's parent
        ([Member("d", SYMLINK, "."), Member("d/e", SYMLINK, "..")], "leaves the prefix"),
        ([Member("d", SYMLINK, "."), Member("x", SYMLINK, "d/..")], "leaves the prefix"),
        # a link made under another link lands where that one leads: x (the root's own) -> ., so x/x/.. is out
        ([Member("a", SYMLINK, "."), Member("a/x", SYMLINK, "."), Member("y", SYMLINK, "x/x/..")], "leaves"),
        ([Member("u", SYMLINK, ".."), Member("u/f", FILE)], "leave"),
        ([Member("a", SYMLINK, "b"), Member("b", SYMLINK, "a")], "leaves the prefix"),  # a loop
    ],
)
def test_archive_members_outside_the_prefix_are_found(members, words):
    problems = member_problems(members)
    assert problems and any(words in p for p in problems), problems


def test_inner_links_pass():
    members = [Member("bin/python3.11", FILE), Member("bin/python", SYMLINK, "python3.11")]
    members += [Member("lib/x", SYMLINK, "../bin/./python"), Member("lib/h", HARDLINK, "bin/python3.11")]
    assert member_problems(members) == []


def test_a_package_writing_through_another_packages_link_is_found_only_for_the_env():
    base = PackageMeta("python.tar.bz2", (), (("lib/python3.11/site-packages/root", "../../.."),), False)
    evil = PackageMeta(
        "evil.tar.bz2", (("info/paths.json", "site-packages/root/x"),), (("site-packages/root/x", ".."),), True
    )
    assert env_problems([base], "3.11.7") == [] and env_problems([evil], "3.11.7") == []  # each alone is fine
    found = env_problems([base, evil], "3.11.7")
    assert found and all(p.startswith("evil.tar.bz2: ") for p in found), found
    # placed as rattler places noarch python: without the python minor's site-packages there is no meeting
    assert env_problems([base, evil], "3.10.0") == []


# -- the resolver against the kernel ----------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
TARGETS = st.lists(st.sampled_from(["a", "b", "c", ".", ".."]), min_size=1, max_size=4).map("/".join)


def _realize(prefix: Path, links: list[tuple[str, str]]) -> dict[str, str]:
    """Make the links under ``prefix`` in order, as extraction would; the ones that could be made."""
    made = {}
    for name, target in links:
        parent = Path(os.path.realpath((prefix / name).parent))
        where = parent / Path(name).name
        if not str(parent).startswith(str(prefix) + os.sep) and parent != prefix:
            continue  # it would land outside the sandboxed prefix: not made here (and refused by the checks)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, where)
        except OSError:
            continue  # a file or folder is there already
        made[name] = target
    return made


def _inside(path: str, prefix: Path) -> bool:
    return path == str(prefix) or path.startswith(str(prefix) + os.sep)


def _kernel(prefix: Path, query: str) -> str | None:
    """Where the kernel resolves ``prefix/query`` (None: a loop). A missing folder inside the prefix is made
    (that changes no resolution; the kernel, unlike a lexical walk, needs it to go on)."""
    while True:
        try:
            return os.path.realpath(prefix / query, strict=True)
        except FileNotFoundError as exc:
            if not _inside(exc.filename, prefix):
                return exc.filename  # out already
            os.mkdir(exc.filename)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(links=st.lists(st.tuples(PATHS, TARGETS), max_size=5), query=PATHS)
def test_resolve_agrees_with_the_kernel(tmp_path_factory, links, query):
    sandbox = Path(os.path.realpath(tmp_path_factory.mktemp("r")))
    prefix = sandbox / "1" / "2" / "3" / "4" / "5" / "6" / "prefix"
    prefix.mkdir(parents=True)
    made = _realize(prefix, links)
    keyed, settled = physical(made)
    if not settled:
        return  # refused on its own (member_problems)
    real = _kernel(prefix, query)
    found = resolve(query, keyed)
    assert (found is None) == (real is None or not _inside(real, prefix)), (made, query, found, real)
    if found is not None:
        assert real == str(prefix.joinpath(*found)), (made, query, found, real)


# -- any bytes in, findings out ---------------------------------------------------------------------

SEGMENTS = st.sampled_from(["a", "b", ".", "..", "", "/", "\\", "C:", "x y", "\0"])
RAW_PATHS = st.lists(SEGMENTS, max_size=5).map("/".join) | st.none() | st.integers()
DOCS = st.sampled_from(["info/paths.json", "info/link.json", "info/has_prefix", "info/files", "info/no_link"])


def _document(name: str, paths: list) -> bytes:
    if name == "info/paths.json":
        return json.dumps({"paths": [{"_path": p} for p in paths]}).encode()
    if name == "info/link.json":
        return json.dumps({"noarch": {"type": "python", "entry_points": [f"{p} = m:f" for p in paths]}}).encode()
    return "".join(f"{p}\n" for p in paths).encode()


#: a valid document wrapped in up to 3000 levels of lists or tables, closed or not (json recurses per level)
NESTING = st.tuples(st.sampled_from(["[", '{"paths":', '{"noarch":', '{"paths":[{"_path":']), st.integers(1, 3000))
CLOSERS = {"[": "]", '{"paths":': "}", '{"noarch":': "}", '{"paths":[{"_path":': "}]}"}


def _nested(data: bytes, nesting: tuple[str, int], closed: bool) -> bytes:
    opener, depth = nesting
    return (opener * depth).encode() + data + (CLOSERS[opener] * depth if closed else "").encode()


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None)
@given(
    name=DOCS | st.just("info/index.json"),
    paths=st.lists(RAW_PATHS, max_size=4),
    garbage=st.binary(max_size=64),
    how=st.sampled_from(["plain", "garbage", "nested"]),
    nesting=NESTING,
    closed=st.booleans(),
)
def test_any_info_document_gives_findings_and_what_passes_stays_inside(name, paths, garbage, how, nesting, closed):
    data = garbage if how == "garbage" else _document(name, paths)
    data = _nested(data, nesting, closed) if how == "nested" else data
    mangle = how != "plain"
    meta, problems = read_meta("x.tar.bz2", [], {name: data})  # never raises
    assert all(isinstance(p, str) and p for p in problems)
    for _, path in meta.paths:  # every path it keeps is a plain relative path that stays in the prefix
        assert path_problem(path) == "" and resolve(path, {}) not in (None, ())
    if name == "info/paths.json" and not mangle and not problems:
        assert len(meta.paths) == len(paths)  # none dropped without a finding


INFO_NAMES = st.sampled_from(["info/paths.json", "./info/paths.json", "info//has_prefix", "info/files", "info/x"])
INFO_MEMBERS = st.builds(
    Member,
    INFO_NAMES,
    st.sampled_from([FILE, FILE, DIR, SYMLINK, HARDLINK]),
    st.just("share/y"),
    st.sampled_from([0, 10, MAX_INFO_BYTES, MAX_INFO_BYTES + 1]),
)


@pytest.mark.fuzz
@settings(max_examples=300, deadline=None)
@given(members=st.lists(INFO_MEMBERS, max_size=4), read=st.sets(st.sampled_from(["info/paths.json", "info/files"])))
def test_an_archive_whose_checks_pass_had_each_info_document_once_and_read(members, read):
    """Oversized, unread, non-file and duplicated info documents: whatever passes, repro read what rattler will."""
    info = {name: paths_json("lib/x") if name.endswith(".json") else b"lib/x\n" for name in read}
    meta, problems = read_meta("x.tar.bz2", members, info)
    problems += member_problems(members)
    assert all(isinstance(p, str) and p for p in problems)
    if not problems:
        docs = [m for m in members if normal(m.name).startswith("info/") and normal(m.name) != "info/x"]
        assert len({normal(m.name) for m in docs}) == len(docs)  # each once
        assert all(m.kind == FILE and m.size <= MAX_INFO_BYTES and normal(m.name) in info for m in docs)
