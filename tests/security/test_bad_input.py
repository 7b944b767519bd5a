"""Bad input is exit 2 naming the field, setting or file, never a traceback, an internal error or a blame on
the package index (issue 22 item 9). One table: each row sets up a project, runs the real `repro` command
line and names what stderr must name; ``after`` checks that nothing was left behind (no lock resolved, no
Metaflow run started). The style of tests/test_bad_input_exit_codes.py, as a table."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import cli, write_flow
from tests.store_fakes import fake_run

FLOW = """
    from metaflow import FlowSpec, Parameter, pypi, step

    class BadInputFlow(FlowSpec):
        alpha = Parameter("alpha", default={default!r})

        @pypi(packages={{"six": "1.16.0"}})
        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        BadInputFlow()
"""


def metaflow_env(tmp_path: Path) -> dict:
    return {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }


def project(tmp_path: Path, pyproject: str | bytes = 'conda-source = "pypi"\n', default: str = "x") -> Path:
    """A flow in ``tmp_path/proj`` with this ``[tool.repro]`` table (bytes: the whole file as is); no lock."""
    path = write_flow(tmp_path / "proj", FLOW.format(default=default), conda_source=None)
    file = path.with_name("pyproject.toml")
    file.write_bytes(pyproject) if isinstance(pyproject, bytes) else file.write_text("[tool.repro]\n" + pyproject)
    return path


@dataclass(frozen=True)
class Row:
    setup: Callable[[Path], tuple[list, dict, Path]]  # tmp_path -> (arguments, environment, folder to run in)
    named: tuple[str, ...]  # what stderr must name
    after: Callable[[Path], None] = lambda tmp_path: None  # nothing left behind


def nul_parameter(tmp_path):
    """A run recorded with a parameter holding a NUL byte (its default): replaying it passed the value on a
    command line (ValueError: embedded null byte, an internal error)."""
    path = project(tmp_path, default="a\0b")
    store = (tmp_path / "store").as_uri()
    r = cli("run", path, "--store", store, env=metaflow_env(tmp_path), cwd=tmp_path)
    assert r.code == 0, r.text[-3000:]
    shutil.rmtree(tmp_path / "mf")
    return ["replay", "BadInputFlow/latest", "--store", store], metaflow_env(tmp_path), tmp_path


def binary_pyproject(tmp_path):
    path = project(tmp_path, b"[tool.repro]\nhome = '\xd0\x00\xff\xfe'\n")
    return ["env", "build", path], {}, path.parent


def setting(variable: str, value: Callable[[Path], str], command: str = "lock"):
    def setup(tmp_path):
        path = project(tmp_path)
        return [*command.split(), path], {variable: value(tmp_path)}, tmp_path

    return setup


def key(line: str):
    def setup(tmp_path):
        path = project(tmp_path, f'conda-source = "pypi"\n{line}\n')
        return ["lock", path], {}, tmp_path  # run from another folder than the project's

    return setup


def report_into_unwritable_folder(tmp_path):
    run = fake_run(tmp_path / "home")
    record = tmp_path / "record.json"
    record.write_text(run.record.to_json())
    folder = tmp_path / "read-only"
    folder.mkdir()
    os.chmod(folder, 0o555)
    if os.geteuid() == 0:  # root writes into any folder of mode 0555: /proc is one nobody can create a file in
        folder = Path("/proc")
    return ["report", record, "-o", folder / "report.md"], {}, tmp_path


def run_id_file(tmp_path):
    path = project(tmp_path)
    store = (tmp_path / "store").as_uri()
    return ["run", path, "--store", store, "--", "--run-id-file", tmp_path / "X"], metaflow_env(tmp_path), tmp_path


def no_lock(tmp_path):
    assert not (tmp_path / "proj" / "flow.repro.lock").exists()


def no_run(tmp_path):
    assert not (tmp_path / "X").exists() and not (tmp_path / "mf").exists()  # Metaflow never started


ROWS = {
    "parameter value with a NUL byte": Row(nul_parameter, ("parameter 'alpha'", "NUL character", "BadInputFlow/")),
    "pyproject.toml with binary bytes": Row(binary_pyproject, ("pyproject.toml", "not UTF-8 text")),
    "REPRO_PLATFORMS=nonsense": Row(
        setting("REPRO_PLATFORMS", lambda t: "nonsense"), ("REPRO_PLATFORMS='nonsense'", "unknown platform"), no_lock
    ),
    "[tool.repro] platforms = nonsense": Row(
        key('platforms = ["linux-64", "nonsense"]'), ("[tool.repro] platforms", "'nonsense'"), no_lock
    ),
    "REPRO_INDEX_URL='not a url'": Row(
        setting("REPRO_INDEX_URL", lambda t: "not a url"), ("REPRO_INDEX_URL",), no_lock
    ),
    "REPRO_FIND_LINKS=/missing": Row(
        setting("REPRO_FIND_LINKS", lambda t: str(t / "missing")),
        ("REPRO_FIND_LINKS", "/missing does not exist"),
        no_lock,
    ),
    "a relative find-links in [tool.repro] is the pyproject.toml's": Row(
        key('find-links = ["wheels"]'), ("[tool.repro] find-links", "proj/wheels does not exist"), no_lock
    ),
    "repro report -o into an unwritable folder": Row(report_into_unwritable_folder, ("-o ", "report.md")),
    "REPRO_OFFLINE=1 repro env build without a lock": Row(
        setting("REPRO_OFFLINE", lambda t: "1", "env build"), ("REPRO_OFFLINE", "no lock file"), no_lock
    ),
    "repro run -- --run-id-file": Row(run_id_file, ("--run-id-file",), no_run),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_is_exit_2_naming_it(name, tmp_path):
    row = ROWS[name]
    args, env, cwd = row.setup(tmp_path)
    r = cli(*args, env=env, cwd=cwd)
    assert "Traceback" not in r.text and "internal error" not in r.text, r.text[-3000:]
    assert "cannot reach the package index" not in r.text, r.text[-3000:]
    assert r.code == 2, r.text[-3000:]
    for words in row.named:
        assert words in r.err, f"{words!r} not in: {r.err[-3000:]}"
    row.after(tmp_path)


def test_a_relative_find_links_folder_is_found_from_any_folder(tmp_path, base_wheels):
    """The fix, used: `find-links = ["wheels"]` is the folder beside the pyproject.toml, not one in wherever
    uv runs (a temporary folder); locking from another folder resolves from it."""
    path = project(tmp_path, 'conda-source = "pypi"\nfind-links = ["wheels"]\nindex-url = "empty-index"\n')
    shutil.copytree(base_wheels, path.parent / "wheels")
    (path.parent / "empty-index").mkdir()
    r = cli("lock", path, cwd=tmp_path)
    assert r.code == 0, r.text[-3000:]
    assert (
        str(path.parent / "wheels" / "six-1.16.0-py2.py3-none-any.whl") in path.with_name("flow.repro.lock").read_text()
    )
