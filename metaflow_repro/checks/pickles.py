"""Pickle compatibility: will every environment that reads an artifact be able to unpickle it?

Static check (pure): the modules a pickle references, from its opcodes, and the versions of
their distributions in the producer's and in each reader's environment. Dynamic check: unpickle
every artifact in every reader environment, one subprocess per environment.
"""

from __future__ import annotations

import pickletools
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.env import probes as envprobe
from metaflow_repro.model.findings import Finding, Kind, Severity
from metaflow_repro.model.record import PickleCheck, PickleStatus, RunRecord

# Metaflow's own bookkeeping artifacts (users' `self._model` is theirs, and is checked)
METAFLOW_INTERNAL = frozenset(
    {
        "_configs_processed",
        "_current_step",
        "_exception",
        "_foreach_num_splits",
        "_foreach_stack",
        "_foreach_var",
        "_foreach_values",
        "_graph_info",
        "_iteration_stack",
        "_success",
        "_task_ok",
        "_transition",
        "_unbounded_foreach",
        "_control_mapper_tasks",
        "_control_task_is_mapper_zero",
        "_parallel_ubf_iter",
    }
)


def is_internal(name: str) -> bool:
    return name in METAFLOW_INTERNAL or name.startswith("__")


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
#: opcodes that push nothing onto the unpickler's stack (everything else pushes one object)
_NO_PUSH = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO", "STOP"}


def _python3_module(name: str) -> str:
    """Protocols 0-2 name some stdlib modules by their Python 2 names (``__builtin__``, ``copy_reg``)."""
    from _compat_pickle import IMPORT_MAPPING

    return IMPORT_MAPPING.get(name, name)


class _Unpickler:
    """As much of the unpickler's state as finding module names needs: what each push left on the
    stack (the text of a string, else None), the memo, and the modules named so far."""

    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.pushed: list[str | None] = []
        self.memo: dict[int, str | None] = {}

    def _top(self) -> str | None:
        return self.pushed[-1] if self.pushed else None

    # the argument's type depends on the opcode (str/bytes for string pushes, int for memo
    # indices, "module name" for GLOBAL), which the stubs cannot express: they say ``Any | None``
    def global_(self, arg: Any) -> None:
        self.modules.add(str(arg).split(" ")[0])
        self.pushed.append(None)

    def string(self, arg: Any) -> None:
        self.pushed.append(arg if isinstance(arg, str) else arg.decode("latin-1"))

    def memoize(self, arg: Any) -> None:
        self.memo[len(self.memo)] = self._top()

    def put(self, arg: Any) -> None:
        self.memo[arg] = self._top()

    def get(self, arg: Any) -> None:
        self.pushed.append(self.memo.get(arg))

    def stack_global(self, arg: Any) -> None:
        """The module and the name are the two objects pushed last; both must be known strings."""
        module = self.pushed[-2] if len(self.pushed) >= 2 else None
        if isinstance(module, str) and isinstance(self.pushed[-1], str):
            self.modules.add(module)
        self.pushed.append(None)

    def push_other(self, arg: Any) -> None:
        self.pushed.append(None)

    def push_nothing(self, arg: Any) -> None:
        pass


#: opcode name -> what it does to the simulated state (any other opcode pushes one unknown object)
_OPCODES: dict[str, Callable[[_Unpickler, Any], None]] = {
    **{name: _Unpickler.push_nothing for name in _NO_PUSH},
    **{name: _Unpickler.string for name in _STRING_OPS},
    "GLOBAL": _Unpickler.global_,
    "STACK_GLOBAL": _Unpickler.stack_global,
    "MEMOIZE": _Unpickler.memoize,
    "PUT": _Unpickler.put,
    "BINPUT": _Unpickler.put,
    "LONG_BINPUT": _Unpickler.put,
    "GET": _Unpickler.get,
    "BINGET": _Unpickler.get,
    "LONG_BINGET": _Unpickler.get,
}


def referenced_modules(blob: bytes) -> set[str]:
    """Top-level modules whose classes or functions a pickle refers to (GLOBAL / STACK_GLOBAL).

    A light simulation of the unpickler's stack: every opcode that pushes an object records it (the
    text of a string, else None), the memo stores what was on top when memoised, and STACK_GLOBAL
    reads the two objects pushed last (module, name). A truncated or foreign blob gives what was
    read before the opcodes stopped making sense."""
    state = _Unpickler()
    try:
        for op, arg, _ in pickletools.genops(blob):
            _OPCODES.get(op.name, _Unpickler.push_other)(state, arg)
    except Exception:
        pass
    tops = {_python3_module(m).split(".")[0] for m in state.modules if m}
    return {m for m in tops if m and m not in sys.stdlib_module_names and m != "builtins"}


def module_distributions(site_packages: list[Path]) -> dict[str, tuple[str, str]]:
    """{top-level module: (distribution, version)} from the RECORD files of an environment."""
    from metaflow_extensions.repro.plugins.probe import _canonical, _metadata

    out: dict[str, tuple[str, str]] = {}
    for site in site_packages:
        for dist_info in sorted(Path(site).glob("*.dist-info")):
            name, version = _metadata(str(dist_info))
            try:
                lines = (dist_info / "RECORD").read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                first = line.split(",", 1)[0].split("/", 1)[0]
                if first.endswith(".py"):
                    first = first[:-3]
                if (
                    first
                    and not first.endswith((".dist-info", ".data"))
                    and first != "__pycache__"
                    and ".." not in first
                ):
                    out.setdefault(first.split(".")[0], (_canonical(name), version))
    return out


def downstream(graph: dict, step: str) -> list[str]:
    seen, todo = [], list(graph.get(step, ()))
    while todo:
        s = todo.pop(0)
        if s not in seen:
            seen.append(s)
            todo.extend(graph.get(s, ()))
    return seen


def _site_packages(python: str) -> list[Path]:
    root = Path(python).parent.parent
    found = sorted(root.glob("lib/python3*/site-packages"))
    if found:
        return found
    import site

    return [Path(p) for p in site.getsitepackages()]


def check(
    record: RunRecord, graph: dict, blobs: dict[str, bytes], pythons: dict[str, str], sys_path: Sequence[str] = ()
) -> tuple[PickleCheck, ...]:
    """Pickle checks for every user artifact of ``record``.

    ``blobs``: sha1 -> verified pickled bytes; ``pythons``: env id (or "disabled") -> interpreter.
    Readers of an artifact: the env of every step downstream of the step that produced it, and the
    producer's own env (the one a replay rebuilds).
    """
    producers: dict[str, tuple[str, str, str]] = {}  # sha1 -> (step, task key, name): first appearance
    for step, s in record.steps.items():
        for key, t in s.tasks.items():
            for name, a in t.artifacts.items():
                if not is_internal(name) and a.sha1 in blobs:
                    producers.setdefault(a.sha1, (step, key, name))
    wanted: dict[str, dict[str, list[str]]] = defaultdict(dict)  # reader env -> sha1 -> reader steps
    for sha, (step, _, _) in producers.items():
        readers = [step] + downstream(graph, step)
        for r in readers:
            env = record.steps[r].env_id
            wanted[env].setdefault(sha, []).append(r)
    dists = {env: module_distributions(_site_packages(py)) for env, py in pythons.items()}
    results = {}
    with tempfile.TemporaryDirectory(prefix="repro-pickles-") as tmp:
        paths = {}
        for sha in producers:
            paths[sha] = Path(tmp) / sha
            paths[sha].write_bytes(blobs[sha])
        for env, shas in wanted.items():
            results[env] = envprobe.run(
                pythons[env], protocol.load_request(sys_path, {sha: paths[sha] for sha in shas})
            )
    checks = []
    for env, shas in sorted(wanted.items()):
        for sha, reader_steps in shas.items():
            step, key, name = producers[sha]
            producer_env = record.steps[step].env_id
            static = _static(blobs[sha], dists.get(producer_env, {}), dists.get(env, {}))
            dyn = results[env][sha]
            status, detail = PickleStatus(dyn[protocol.STATUS]), dyn[protocol.DETAIL]
            if status == PickleStatus.OK and static:
                status, detail = PickleStatus.WARNING, "loads, but versions differ"
            checks.append(
                PickleCheck(
                    step=step,
                    task=key,
                    artifact=name,
                    reader_env=env,
                    reader_steps=tuple(reader_steps),
                    status=status,
                    detail=detail,
                    static="; ".join(static),
                )
            )
    return tuple(sorted(checks, key=lambda c: (list(record.steps).index(c.step), c.task, c.artifact, c.reader_env)))


def _static(blob: bytes, producer: dict, reader: dict) -> list[str]:
    notes = []
    for module in sorted(referenced_modules(blob)):
        made = producer.get(module)
        read = reader.get(module)
        if made is None:
            continue
        if read is None:
            notes.append(f"{made[0]} {made[1]} -> not installed")
        elif read[1] != made[1]:
            notes.append(f"{made[0]} {made[1]} -> {read[1]}")
    return sorted(set(notes))


def findings(checks) -> list[Finding]:
    """One finding per reader step of every check that did not load cleanly."""
    out = []
    for c in checks:
        if c.status is PickleStatus.OK:
            continue
        what = f"artifact '{c.artifact}' (from {c.step}/{c.task})"
        why = "; ".join(x for x in (c.detail, c.static) if x)
        if c.status is PickleStatus.FAILS:
            message, severity = f"pickle: {what} cannot be unpickled in this step's environment: {why}", Severity.ERROR
        else:
            message, severity = f"{what} loads with a warning: {why}", Severity.WARNING
        out += [
            Finding(
                Kind.PICKLE,
                message,
                step=reader,
                task=c.task,
                env_id=c.reader_env,
                subject=c.artifact,
                old=c.step,
                severity=severity,
            )
            for reader in c.reader_steps
        ]
    return out
