"""Pickle compatibility, static part (pure): which modules a pickle references, read from its
opcodes without unpickling it, and what differs between producer and reader versions."""

import collections
import pickle
import sys
import types

import pytest

from metaflow_repro.checks.pickles import _static, downstream, is_internal, referenced_modules


@pytest.fixture(scope="module")
def fake_modules():
    """Two importable non-stdlib modules (pickle checks a class can be found by import)."""
    made = {}
    for name in ("t15pkg", "t15pkg.sub", "t15other"):
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        made[name] = mod
    for modname, cls in (("t15pkg.sub", "A"), ("t15pkg.sub", "B"), ("t15other", "C")):
        klass = type(cls, (), {"__module__": modname})
        klass.__qualname__ = cls
        setattr(made[modname], cls, klass)
    yield made
    for name in made:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_modules_of_every_class(fake_modules, protocol):
    sub, other = fake_modules["t15pkg.sub"], fake_modules["t15other"]
    for value in (
        [sub.A(), other.C(), sub.A()],
        [other.C, other.C, sub.B],
        [sub.A(), collections.OrderedDict(a=1), len],
    ):
        want = {"t15pkg"} | ({"t15other"} if other.C in value or isinstance(value[1], other.C) else set())
        blob = pickle.dumps(value, protocol=protocol, fix_imports=False)  # Python 2 names: see test_python2_names_...
        assert referenced_modules(blob) == want, (protocol, value)
    assert referenced_modules(pickle.dumps(sub.A(), protocol=protocol)) == {"t15pkg"}
    assert referenced_modules(pickle.dumps({"k": other.C()}, protocol=protocol, fix_imports=False)) == {"t15other"}


def test_a_module_name_reused_through_the_memo_is_still_seen(fake_modules):
    """Protocol 4+: a second class of a module gets its module name from the memo (BINGET)."""
    import pickletools

    sub, other = fake_modules["t15pkg.sub"], fake_modules["t15other"]
    blob = pickle.dumps((sub.A, other.C, sub.B), protocol=4)
    ops = [op.name for op, _, _ in pickletools.genops(blob)]
    assert "BINGET" in ops and ops.count("STACK_GLOBAL") == 3
    assert referenced_modules(blob) == {"t15pkg", "t15other"}


def test_a_module_name_first_pickled_as_data_is_found_through_the_memo(fake_modules):
    """The only STACK_GLOBAL gets its module from the memo (MEMOIZE numbers entries implicitly)."""
    import pickletools

    sub = fake_modules["t15pkg.sub"]
    blob = pickle.dumps([sub.A.__module__, sub.A], protocol=4)
    ops = [op.name for op, _, _ in pickletools.genops(blob)]
    assert ops.index("BINGET") < ops.index("STACK_GLOBAL") and "BINPUT" not in ops
    assert referenced_modules(blob) == {"t15pkg"}


def test_a_frame_between_module_and_name_pushes_nothing(fake_modules):
    """Protocol 4 starts a new FRAME every 64 KiB, also between a global's module and name."""
    import pickletools

    sub = fake_modules["t15pkg.sub"]
    for size in range(65_400, 65_600):
        blob = pickle.dumps(("x" * size, sub.A), protocol=4)
        ops = [op.name for op, _, _ in pickletools.genops(blob)]
        if "FRAME" in ops[ops.index("STACK_GLOBAL") - 3 :]:
            break
    else:
        pytest.fail("no filler size puts a FRAME between the module and the name")
    assert referenced_modules(blob) == {"t15pkg"}


def test_long_memo_indices(fake_modules):
    sub, other = fake_modules["t15pkg.sub"], fake_modules["t15other"]
    filler = tuple(f"s{i}" for i in range(300))  # memo indices past 255: LONG_BINPUT / LONG_BINGET
    assert referenced_modules(pickle.dumps((*filler, sub.A(), other.C(), sub.B()), protocol=2)) == {
        "t15pkg",
        "t15other",
    }
    assert referenced_modules(pickle.dumps((*filler, sub.A, other.C, sub.B), protocol=4)) == {"t15pkg", "t15other"}


def test_protocol_0_text_globals(fake_modules):
    sub = fake_modules["t15pkg.sub"]
    assert referenced_modules(pickle.dumps(sub.A, protocol=0)) == {"t15pkg"}
    assert referenced_modules(pickle.dumps((sub.A, sub.B), protocol=0, fix_imports=False)) == {"t15pkg"}


def test_memo_indices_stay_aligned_after_a_memoised_container(fake_modules):
    sub = fake_modules["t15pkg.sub"]
    assert referenced_modules(pickle.dumps([sub.A(), sub.B()], protocol=4)) == {"t15pkg"}


def test_python2_names_of_stdlib_modules_are_not_reported(fake_modules):
    sub = fake_modules["t15pkg.sub"]
    assert referenced_modules(pickle.dumps([sub.A(), len], protocol=2)) == {"t15pkg"}


def test_stdlib_builtins_and_plain_data_reference_nothing():
    assert referenced_modules(pickle.dumps({"a": [1, 2.0, "x", b"y", None, True]})) == set()
    assert referenced_modules(pickle.dumps((collections.Counter("ab"), len, pickle.Pickler), protocol=3)) == set()
    assert referenced_modules(pickle.dumps(["t15pkg", "sub"], protocol=4)) == set()  # strings only, no class


def test_a_truncated_or_foreign_blob_gives_what_was_read_so_far(fake_modules):
    sub = fake_modules["t15pkg.sub"]
    blob = pickle.dumps((sub.A, sub.B), protocol=0, fix_imports=False)
    assert referenced_modules(blob[: blob.index(b"\nB") + 3]) == {"t15pkg"}
    assert referenced_modules(b"not a pickle at all") == set()
    assert referenced_modules(b"") == set()


def test_static_notes_name_distribution_and_both_versions():
    names = ["a_s15nodist", "s15pkg", "s15other", "s15same", "s15unknown", "s15also"]
    objs = []
    for name in names:
        mod = types.ModuleType(name)
        klass = type("K", (), {"__module__": name})
        mod.K = klass
        sys.modules[name] = mod
        objs.append(klass())
    try:
        blob = pickle.dumps(objs, protocol=3)
    finally:
        for name in names:
            sys.modules.pop(name, None)
    assert referenced_modules(blob) == set(names)
    producer = {
        "s15pkg": ("t15-pkg", "1.0"),
        "s15other": ("t15-other", "2.0"),
        "s15same": ("t15-same", "3.0"),
        "s15also": ("t15-pkg", "1.0"),
    }  # two modules of one distribution: one note
    reader = {
        "s15pkg": ("t15-pkg", "1.1"),
        "s15same": ("t15-same", "3.0"),
        "s15unknown": ("x", "9"),
        "s15also": ("t15-pkg", "1.1"),
        "a_s15nodist": ("y", "1"),
    }
    assert _static(blob, producer, reader) == ["t15-other 2.0 -> not installed", "t15-pkg 1.0 -> 1.1"]


def test_static_notes_from_a_real_pickle(fake_modules):
    sub = fake_modules["t15pkg.sub"]
    blob = pickle.dumps([sub.A(), sub.A()], protocol=5)
    made = {"t15pkg": ("t15-pkg", "1.0")}
    assert _static(blob, made, {"t15pkg": ("t15-pkg", "1.0")}) == []
    assert _static(blob, made, {"t15pkg": ("t15-pkg", "2.0")}) == ["t15-pkg 1.0 -> 2.0"]
    assert _static(blob, made, {}) == ["t15-pkg 1.0 -> not installed"]
    assert _static(blob, {}, {"t15pkg": ("t15-pkg", "2.0")}) == []  # not from a distribution: nothing to say


def test_downstream_is_every_step_reachable_in_breadth_first_order():
    graph = {"start": ("a", "b"), "a": ("join",), "b": ("c",), "c": ("join",), "join": ("end",), "end": ()}
    assert downstream(graph, "start") == ["a", "b", "join", "c", "end"]
    assert downstream(graph, "c") == ["join", "end"]
    assert downstream(graph, "end") == [] and downstream(graph, "nowhere") == []
    assert downstream({"x": ("y",), "y": ("x",)}, "x") == ["y", "x"]  # cycles end
    assert downstream({"start": ("a", "b"), "a": ("b",)}, "start") == ["a", "b"]  # b has no entry of its own


@pytest.mark.parametrize(
    "name,internal",
    [
        ("_foreach_stack", True),
        ("_transition", True),
        ("__secret", True),
        ("_parallel_ubf_iter", True),
        ("_model", False),
        ("name", False),
        ("_", False),
        ("foreach_stack", False),
    ],
)
def test_metaflow_bookkeeping_is_internal_and_users_underscores_are_not(name, internal):
    assert is_internal(name) is internal


def _handmade(*ops: bytes) -> bytes:
    return b"\x80\x04" + b"".join(ops) + b"."


def _unicode(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode()


@pytest.mark.parametrize(
    "put,get",
    [
        (lambda i: b"p%d\n" % i, lambda i: b"g%d\n" % i),  # PUT / GET (text)
        (lambda i: b"q" + bytes([i]), lambda i: b"h" + bytes([i])),  # BINPUT / BINGET
        (lambda i: b"r" + i.to_bytes(4, "little"), lambda i: b"j" + i.to_bytes(4, "little")),  # LONG_*
    ],
)
def test_explicit_memo_puts_and_gets_of_other_picklers(put, get):
    """Other picklers (and hand-written pickles) memoise with PUT/BINPUT/LONG_BINPUT instead of
    MEMOIZE; a module name fetched back from the memo must still be seen."""
    blob = _handmade(
        _unicode("t15pkg.sub"), put(0), _unicode("A"), put(1), b"\x93", get(0), _unicode("B"), b"\x93", b"\x86"
    )
    assert referenced_modules(blob) == {"t15pkg"}
    # the module comes from the memo, not from whatever string came last
    blob = _handmade(
        _unicode("t15other"),
        put(0),
        _unicode("A"),
        put(1),
        b"\x93",
        _unicode("x_last"),
        b"0",
        get(0),
        _unicode("B"),
        b"\x93",
        b"\x86",
    )
    assert referenced_modules(blob) == {"t15other"}
    blob = _handmade(
        _unicode("t15pkg"),
        put(0),
        b"0",
        _unicode("t15other"),
        _unicode("C"),
        b"\x93",
        get(0),
        _unicode("D"),
        b"\x93",
        b"\x86",
    )
    assert referenced_modules(blob) == {"t15pkg", "t15other"}
