"""pytest plugin (entry point ``pytest11: repro``). Thin: options, collection and reporting hooks
hand every decision to ``ReproSession``. Without ``--repro`` it collects nothing and does nothing
but answer ``pytest_collect_file`` with ``None``.

Installing repro loads this module into every pytest run of every project in the environment, so
it imports nothing but pytest and the standard library at load: the session (and with it Metaflow,
boto3, rattler, docker, the store...) is imported by the hooks that need it, once ``--repro`` (or the
``repro_run`` fixture) asks for one. ``tests/unit/pytest/test_plugin.py`` keeps it so."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from metaflow_repro.pytest.session import ReproSession

#: the places ``--repro-on`` accepts: ``metaflow_repro.settings.REPLAY_PLACES``, spelled again because importing
#: settings (its TOML reader, the protocol, the errors) at load costs every pytest run about 3% of its
#: CPU; tests/unit/pytest/test_plugin.py holds the two equal
REPLAY_PLACES = ("local", "docker", "batch")

#: the module that defines the session and its stash key; importing it is what this plugin avoids
_SESSION_MODULE = "metaflow_repro.pytest.session"


def _session(config) -> ReproSession | None:
    """The run's session, if one was made. Every session is made through the session module (by
    ``pytest_configure`` under ``--repro``, or by the ``repro_run`` fixture), so while that module is
    not imported there is none, and asking costs no import."""
    module = sys.modules.get(_SESSION_MODULE)
    return None if module is None else config.stash.get(module.SESSION, None)


def pytest_addoption(parser):
    group = parser.getgroup("repro", "reproducible Metaflow flows (repro)")
    group.addoption(
        "--repro",
        action="store_true",
        default=False,
        help="collect Metaflow flow files: one item per step, plus [lock], [pickle], [baseline]",
    )
    group.addoption("--repro-store", default=None, metavar="URI", help="store for baselines and --repro-update")
    group.addoption(
        "--repro-baseline",
        default=None,
        metavar="REF",
        help="compare each flow's run with this recorded run (FlowName/run_id, or 'latest')",
    )
    group.addoption(
        "--repro-update",
        action="store_true",
        default=False,
        help="record this run in the store and move 'latest' to it",
    )
    group.addoption(
        "--repro-drift",
        action="store_true",
        default=False,
        help="also re-resolve every lock now and fail on resolution drift",
    )
    group.addoption("--repro-report", default=None, metavar="DIR", help="where reports go (default: reports/)")
    group.addoption(
        "--repro-platform",
        action="append",
        default=None,
        metavar="NAME",
        help="platforms every lock must cover (repeatable)",
    )
    group.addoption(
        "--repro-allow-other-flow",
        action="store_true",
        default=False,
        help="compare with a baseline recorded from another flow (same class name, another flow file or "
        "@project branch); without it such a baseline is refused and the flow does not run",
    )
    group.addoption(
        "--repro-frozen",
        action="store_true",
        default=False,
        help="a stale lock fails [lock] and the flow does not run (also REPRO_FROZEN=1); "
        "without it a stale lock is re-locked and only [lock] fails",
    )
    group.addoption(
        "--repro-on",
        default=None,
        choices=list(REPLAY_PLACES),
        help="also replay each run from the store there (docker: a fresh container; batch: AWS Batch); "
        "the flow's items pass only if the replay is identical (default: local, no replay)",
    )
    group.addoption(
        "--repro-hermetic",
        action="store_true",
        default=False,
        help="fail a step that read anything a replay cannot give back (files outside the snapshot, network "
        "endpoints), naming it; [tool.repro] hermetic-allow lists what is accepted (also REPRO_HERMETIC=1)",
    )
    group.addoption(
        "--repro-repeat",
        type=int,
        default=None,
        metavar="N",
        help="run each flow N times in the same environments, at once; a step whose artifact differs between "
        'the runs fails (accept one with [tool.repro] nondeterministic = ["Flow.step.artifact"])',
    )
    for name, help_ in (
        ("repro_on", f"where each run is also replayed: {', '.join(REPLAY_PLACES)}"),
        ("repro_store", "store URI"),
        ("repro_baseline", "baseline REF"),
        ("repro_report", "report folder"),
        ("repro_platform", "platforms, space-separated"),
        ("repro_repeat", "runs of each flow, compared for determinism (default 1)"),
    ):
        parser.addini(name, help_, default="")
    parser.addini("repro_update", "record runs as the new baseline", type="bool", default=False)
    parser.addini("repro_drift", "fail on resolution drift", type="bool", default=False)
    parser.addini("repro_hermetic", "fail a step that read what a replay cannot give back", type="bool", default=False)
    parser.addini("repro_allow_other_flow", "compare with a baseline of another flow file", type="bool", default=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "repro(flow): the flow file that the repro_run fixture runs")
    # Metaflow imports PyYAML's C extension by its old name; users cannot act on that warning
    config.addinivalue_line("filterwarnings", "ignore:The _yaml extension module:DeprecationWarning")
    if config.getoption("repro"):
        from metaflow_repro.pytest.session import SESSION, ReproSession

        uid = getattr(config, "workerinput", {}).get("repro_uid")
        config.stash[SESSION] = ReproSession(config, uid=uid)
        if uid is None:  # the controller (not an xdist worker) refuses an unreachable --repro-on at once
            from metaflow_repro.errors import ReproError

            try:
                config.stash[SESSION].check_where()
            except ReproError as exc:
                raise pytest.UsageError(str(exc)) from None
        config.pluginmanager.register(config.stash[SESSION], "repro-session")  # it hears each item's report


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist: every worker shares the controller's session folder, so a flow runs once."""
    session = _session(node.config)
    if session is not None:
        node.workerinput["repro_uid"] = session.uid


def _looks_like_flow(path: Path, config) -> bool:
    """A flow file candidate that the user's python_files patterns do not claim as a test module."""
    import fnmatch

    from metaflow_repro.env.flowfile import is_flow_candidate

    if any(fnmatch.fnmatch(path.name, pattern) for pattern in config.getini("python_files")):
        return False  # the user's test modules stay test modules
    return is_flow_candidate(path)


def pytest_collect_file(file_path: Path, parent):
    if _session(parent.config) is None or not _looks_like_flow(file_path, parent.config):
        return None
    from metaflow_repro.pytest.items import FlowFile

    return FlowFile.from_parent(parent, path=file_path)


def pytest_pycollect_makemodule(module_path: Path, parent):
    """Under --repro a flow file given on the command line is a flow, not a test module."""
    if _session(parent.config) is not None and _looks_like_flow(module_path, parent.config):
        return _Empty.from_parent(parent, path=module_path)
    return None


class _Empty(pytest.File):
    def collect(self):
        return []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = _session(config)
    if session is None or hasattr(config, "workerinput"):
        return
    from metaflow_repro.report import render as report

    doc = session.document()
    if not doc.flows:
        return
    terminalreporter.section("repro")
    terminalreporter.write_line(report.terminal(doc))
    written = report.write(doc, session.report_folder())
    terminalreporter.write_line("reports: " + ", ".join(str(p) for p in written))


def pytest_unconfigure(config):
    session = _session(config)
    if session is not None and not hasattr(config, "workerinput"):
        import shutil

        shutil.rmtree(session.folder, ignore_errors=True)


@pytest.fixture
def repro_run(request):
    """The run of the flow named by ``@pytest.mark.repro("path/to/flow.py")``: ``.record`` (a
    RunRecord), ``.ok``, ``.artifact(step, name, task="-")`` (unpickled here) and
    ``.artifact_in_env(step, name)`` (unpickled in the step's own environment, returned as a plain value)."""
    marker = request.node.get_closest_marker("repro")
    if marker is None or not (marker.args or marker.kwargs.get("flow")):
        pytest.fail("repro_run needs the flow: mark the test with @pytest.mark.repro('path/to/flow.py')")
    raw = Path(marker.args[0] if marker.args else marker.kwargs["flow"])
    candidates = [raw] if raw.is_absolute() else [Path(request.node.path).parent / raw, request.config.rootpath / raw]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        pytest.fail(f"repro_run: no flow file {raw} (looked in {', '.join(str(c) for c in candidates)})")
    from metaflow_repro.pytest.session import RunHandle, session_of

    return RunHandle(session_of(request.config).outcome(path))
