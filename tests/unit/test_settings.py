"""The settings table, its README copy, typed validation, ``Home``, and the host<->task protocol."""

from __future__ import annotations

import ast
import json
import pickle
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.errors import BadInput
from metaflow_repro.settings import (
    BY_NAME,
    SETTINGS,
    Home,
    Settings,
    debug_requested,
    env_setting,
    environ_for,
    load_settings,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "metaflow_repro").rglob("*.py")) + sorted((ROOT / "metaflow_extensions").rglob("*.py"))


def project(tmp_path: Path, body: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pyproject.toml").write_text("[tool.repro]\n" + body)
    return tmp_path


# -- the table and the README -----------------------------------------------------------------------


def _readme_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- settings table: begin[^>]*-->\n(.*?)<!-- settings table: end -->", text, re.S)
    assert m, "README.md has no settings table between the markers"
    rows = []
    for line in m.group(1).strip().splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows


def _name(cell: str) -> str | None:
    return None if cell == "—" else cell.strip("`")


def test_readme_documents_every_setting_and_no_other():
    rows = _readme_rows()
    documented = [(_name(r[0]), _name(r[1])) for r in rows]
    assert documented == [(s.env, s.key) for s in SETTINGS]
    assert all(r[4] for r in rows), "every setting says what it does"


def test_readme_table_is_the_generated_one():
    text = (ROOT / "README.md").read_text()
    assert markdown_table() in text, (
        "README's settings table is stale: paste `python -m metaflow_repro.settings` into it"
    )


def test_table_is_well_formed():
    assert [f.name for f in fields(Settings) if f.name not in ("config_file", "origins")] == [s.name for s in SETTINGS]
    for s in SETTINGS:
        assert s.env or s.key, s.name
        assert s.doc and "\n" not in s.doc
    envs = [s.env for s in SETTINGS if s.env]
    keys = [s.key for s in SETTINGS if s.key]
    assert len(envs) == len(set(envs)) and len(keys) == len(set(keys))


def test_every_repro_variable_in_the_code_is_a_setting_or_part_of_the_protocol():
    known = {s.env for s in SETTINGS if s.env} | {
        v for k, v in vars(protocol).items() if k.endswith("_VAR") and isinstance(v, str)
    }
    seen = set()
    for path in SOURCES:
        seen |= set(re.findall(r"\bREPRO_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert seen - known == set(), "undocumented variables: add them to metaflow_repro/settings.py or protocol.py"


# -- reading and validating -------------------------------------------------------------------------


def test_defaults(tmp_path):
    s = load_settings(tmp_path, environ={})
    assert s.home.root == (Path.home() / ".cache" / "repro").resolve()
    assert s.store == s.home.store.as_uri()
    assert (s.conda_source, s.platforms, s.index_url, s.find_links) == ("conda", (), None, ())
    assert (s.artifact_max_bytes, s.frozen, s.offline, s.debug) == (16 << 20, False, False, False)
    assert (s.baseline, s.update, s.drift, s.report) == (None, False, False, "reports")
    assert set(s.origins.values()) == {"default"} and s.given("store") is None


def test_environment_over_file_over_default(tmp_path):
    folder = project(
        tmp_path,
        'store = "file:///from-file"\nconda-source = "pypi"\nplatforms = ["linux-64"]\n'
        'artifact-max-bytes = 10\nupdate = true\nreport = "out"\n',
    )
    s = load_settings(
        folder,
        environ={
            "REPRO_STORE": "s3://bucket/env",
            "REPRO_PLATFORMS": "linux-64, osx-arm64",
            "REPRO_HOME": str(tmp_path / "h"),
            "REPRO_CONDA_SOURCE": "",
        },
    )
    assert s.store == "s3://bucket/env" and s.origins["store"] == "REPRO_STORE"
    assert s.platforms == ("linux-64", "osx-arm64")
    assert s.conda_source == "pypi" and "conda-source" in s.origins["conda_source"]  # empty variable: unset
    assert (s.artifact_max_bytes, s.update, s.report) == (10, True, "out")
    assert s.home == Home((tmp_path / "h").resolve()) and s.config_file == folder / "pyproject.toml"
    assert s.given("store") == "s3://bucket/env" and s.given("baseline") is None


def test_store_default_follows_home(tmp_path):
    s = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    assert s.store == (tmp_path / "home" / "store").resolve().as_uri()


@pytest.mark.parametrize(
    "var, value, words",
    [
        ("REPRO_ARTIFACT_MAX_BYTES", "lots", "whole number of bytes"),
        ("REPRO_ARTIFACT_MAX_BYTES", "-1", "whole number of bytes"),
        ("REPRO_CONDA_SOURCE", "conda-forge", "one of conda, pypi"),
        ("REPRO_FROZEN", "maybe", "one of 1, true"),
        ("REPRO_OFFLINE", "2", "one of 1, true"),
        ("REPRO_PYTHONHASHSEED", "abc", "'random' or an integer"),
        ("REPRO_PYTHONHASHSEED", "4294967296", "'random' or an integer"),
        ("REPRO_PLATFORMS", "nonsense", "unknown platform 'nonsense'"),
        ("REPRO_PLATFORMS", "linux-64,osx", "unknown platform 'osx'"),
        ("REPRO_INDEX_URL", "https://", "not an http://, https:// or file:// URL"),
        ("REPRO_FIND_LINKS", "/a s3://b/c", "not an http://, https:// or file:// URL"),
    ],
)
def test_a_bad_variable_is_blamed(tmp_path, var, value, words):
    folder = project(tmp_path, 'conda-source = "pypi"\nartifact-max-bytes = 5\n')
    with pytest.raises(BadInput) as err:
        load_settings(folder, environ={var: value})
    text = str(err.value)
    assert text.startswith(f"{var}={value!r}") and words in text and "pyproject" not in text


@pytest.mark.parametrize(
    "line, key, words",
    [
        ('artifact-max-bytes = "lots"', "artifact-max-bytes", "whole number of bytes"),
        ("artifact-max-bytes = true", "artifact-max-bytes", "whole number of bytes"),
        ('conda-source = "conda-forge"', "conda-source", "one of conda, pypi"),
        ("platforms = [1, 2]", "platforms", "platform names among linux-64"),
        ('platforms = ["linux-64", "nonsense"]', "platforms", "(unknown platform 'nonsense')"),
        ("find-links = 3", "find-links", "URLs, or folders"),
        ('find-links = ["ftp://x/y"]', "find-links", "is not an http://, https:// or file:// URL"),
        ('index-url = "not a url://"', "index-url", "is not an http://, https:// or file:// URL"),
        ("update = 1", "update", "one of 1, true"),
        ("store = 5", "store", "a string"),
        ("home = []", "home", "a path"),
    ],
)
def test_a_bad_key_is_blamed_on_the_file(tmp_path, line, key, words):
    folder = project(tmp_path, line + "\n")
    with pytest.raises(BadInput) as err:
        load_settings(folder, environ={})
    text = str(err.value)
    assert text.startswith(f"{folder / 'pyproject.toml'}: [tool.repro] {key} = ") and words in text


def test_the_variable_wins_over_a_bad_key_and_is_not_blamed(tmp_path):
    folder = project(tmp_path, 'artifact-max-bytes = "lots"\n')
    assert load_settings(folder, environ={"REPRO_ARTIFACT_MAX_BYTES": "7"}).artifact_max_bytes == 7


@pytest.mark.parametrize(
    "text, value",
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_flags(text, value):
    assert env_setting("frozen", {"REPRO_FROZEN": text}) is value


def test_typed_values_from_the_file(tmp_path):
    folder = project(
        tmp_path,
        'platforms = "linux-64 osx-arm64"\nfind-links = ["/a", "/b"]\n'
        'artifact-max-bytes = "2048"\ndrift = true\nhome = "~/x"\n',
    )
    s = load_settings(folder, environ={})
    assert s.platforms == ("linux-64", "osx-arm64") and s.find_links == ("/a", "/b")
    assert (s.artifact_max_bytes, s.drift) == (2048, True)
    assert s.home.root == (Path.home() / "x").resolve()


def test_malformed_pyproject_is_bad_input(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.repro\n")
    with pytest.raises(BadInput, match="cannot read"):
        load_settings(tmp_path, environ={})


def test_environ_for_reads_back(tmp_path):
    env = environ_for(
        frozen=True,
        offline=False,
        index_url="http://x/simple",
        home=Home(tmp_path),
        pythonhashseed="123",
        platforms=("linux-64", "osx-arm64"),
        conda_source="pypi",
    )
    assert env == {
        "REPRO_FROZEN": "1",
        "REPRO_OFFLINE": "0",
        "REPRO_INDEX_URL": "http://x/simple",
        "REPRO_HOME": str(tmp_path),
        "REPRO_PYTHONHASHSEED": "123",
        "REPRO_PLATFORMS": "linux-64 osx-arm64",
        "REPRO_CONDA_SOURCE": "pypi",
    }
    s = load_settings(tmp_path, environ=env)
    assert (s.frozen, s.offline, s.pythonhashseed, s.platforms) == (True, False, "123", ("linux-64", "osx-arm64"))
    with pytest.raises(BadInput, match="REPRO_PYTHONHASHSEED='0,1'"):
        environ_for(pythonhashseed="0,1")
    with pytest.raises(ValueError):
        environ_for(baseline="x")  # no variable


def test_debug_requested():
    assert debug_requested({}) is False
    assert debug_requested({"REPRO_DEBUG": "1"}) is True
    assert debug_requested({"REPRO_DEBUG": "0"}) is False
    assert debug_requested({"REPRO_DEBUG": "please"}) is True  # asked for, in some spelling


def test_hash_seed_setting_uses_the_protocol_name():
    assert BY_NAME["pythonhashseed"].env == protocol.HASH_SEED_VAR


# -- Home -------------------------------------------------------------------------------------------


def test_home_paths(tmp_path):
    h = Home(tmp_path)
    sha = "ab" * 32
    assert (h.packages, h.envs, h.uv_cache, h.pycache, h.store) == (
        tmp_path / "packages",
        tmp_path / "envs",
        tmp_path / "uv-cache",
        tmp_path / "pycache",
        tmp_path / "store",
    )
    assert h.code_package(sha) == tmp_path / "code" / f"{sha}.tar.gz"
    assert h.code_folder(sha) == tmp_path / "code" / sha[:32]
    assert h.record("TrainFlow", "1742") == tmp_path / "records" / "TrainFlow" / "1742.json"
    assert h.replays_of("TrainFlow") == tmp_path / "replays" / "TrainFlow"
    assert h.pytest_session("abc123") == tmp_path / "pytest" / "abc123"
    assert str(h) == str(tmp_path)


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.record("../x", "1"),
        lambda h: h.record("F", "a/b"),
        lambda h: h.replays_of(".."),
        lambda h: h.code_package("../../etc"),
        lambda h: h.pytest_session(""),
    ],
)
def test_home_refuses_names_that_leave_it(tmp_path, call):
    with pytest.raises(BadInput):
        call(Home(tmp_path))


def test_nothing_builds_paths_under_home_by_hand():
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in SOURCES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\.home\s*/|home_dir\s*/", line)
    ]
    assert offenders == []


# -- pytest options: command line, then [tool.pytest.ini_options], then settings --------------------


def _config(rootpath, options=None, ini=None):
    options, ini = options or {}, ini or {}
    return SimpleNamespace(
        rootpath=rootpath,
        getoption=lambda name: options.get(name),
        getini=lambda name: ini.get(name, False if name in ("repro_update", "repro_drift") else ""),
    )


def test_pytest_options_precedence(tmp_path, monkeypatch):
    from metaflow_repro.pytest.session import Options

    for s in SETTINGS:
        if s.env:
            monkeypatch.delenv(s.env, raising=False)
    folder = project(
        tmp_path, 'store = "file:///file"\nbaseline = "latest"\nupdate = true\nreport = "r"\nplatforms = ["linux-64"]\n'
    )
    o = Options.from_config(_config(folder))
    assert (o.store, o.baseline, o.update, o.drift, o.report_dir, o.platforms) == (
        "file:///file",
        "latest",
        True,
        False,
        "r",
        ("linux-64",),
    )
    o = Options.from_config(_config(folder, ini={"repro_store": "file:///ini", "repro_platform": "osx-arm64"}))
    assert (o.store, o.platforms) == ("file:///ini", ("osx-arm64",))
    o = Options.from_config(
        _config(
            folder,
            options={"repro_store": "file:///cli", "repro_platform": ["win-64"]},
            ini={"repro_store": "file:///ini"},
        )
    )
    assert (o.store, o.platforms) == ("file:///cli", ("win-64",))
    o = Options.from_config(_config(project(tmp_path / "empty")))
    assert (o.store, o.baseline, o.update, o.report_dir, o.platforms) == (None, None, False, "reports", ())


# -- the protocol ------------------------------------------------------------------------------------


def test_protocol_is_self_contained():
    tree = ast.parse((ROOT / "metaflow_extensions/repro/plugins/protocol.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(k.startswith(protocol.METADATA_PREFIX) for k in protocol.METADATA_KEYS)
    assert len(set(protocol.METADATA_KEYS)) == len(protocol.METADATA_KEYS)


@pytest.mark.parametrize(
    "literal",
    [
        '"repro-env-id"',
        '"repro-spec-id"',
        '"repro-fingerprint"',
        '"repro-pythonhashseed"',
        '"repro-interpreter"',
        '"repro-code-sha"',
        '"REPRO_ENV_ID"',
        '"REPRO_SPEC_ID"',
        '"REPRO_CODE_SHA"',
        '"REPRO_PYTHONHASHSEED"',
        ".repro-env.json",
    ],
)
def test_protocol_names_are_spelled_only_in_the_protocol(literal):
    where = [str(p.relative_to(ROOT)) for p in SOURCES if p.name != "protocol.py" and literal in p.read_text()]
    assert where == []


def test_builder_and_tasks_agree_on_the_marker():
    from metaflow_repro.env import build

    assert build.MARKER == protocol.ENV_MARKER


def test_artifact_probe_speaks_the_protocol_as_a_script(tmp_path):
    from metaflow_repro.env.probes import PROBE

    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_bytes(pickle.dumps({"a": 1}))
    bad.write_bytes(b"not a pickle")
    request = protocol.load_request([], {"g": good, "b": bad})
    proc = subprocess.run(
        [sys.executable, "-I", str(PROBE)], input=json.dumps(request), capture_output=True, text=True, check=True
    )
    answer = json.loads(proc.stdout)
    assert answer["g"] == protocol.load_answer(protocol.STATUS_OK)
    assert answer["b"][protocol.STATUS] == protocol.STATUS_FAILS
    request = protocol.compare_request([], [], {}, {"x": (good, bad)})
    proc = subprocess.run(
        [sys.executable, "-I", str(PROBE)], input=json.dumps(request), capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout)["x"][protocol.VERDICT] == protocol.VERDICT_DIFFERENT


def test_a_replay_gets_the_spec_settings_its_record_kept(tmp_path):
    from metaflow_repro.settings import spec_environ, spec_settings

    conda = load_settings(tmp_path, environ={"REPRO_CONDA_CHANNELS": "./channel conda-forge", "REPRO_HOME": "/tmp/h"})
    kept = spec_settings(conda)
    assert kept == {"conda_source": "conda", "channels": "./channel conda-forge", "virtual_packages": ""}
    assert spec_environ(kept) == {"REPRO_CONDA_SOURCE": "conda", "REPRO_CONDA_CHANNELS": "./channel conda-forge"}
    assert spec_environ({"conda_source": "pypi"}) == {"REPRO_CONDA_SOURCE": "pypi"}
    assert spec_environ({"conda_source": None}) == {"REPRO_CONDA_SOURCE": "pypi"}  # records from before the default
    assert spec_environ({}) == {}


@pytest.mark.parametrize("text", ["/var/cache/repro", "/mnt/nvme0/repro-cache", "off"])
def test_batch_cache_is_a_plain_absolute_path_or_off(text):
    from metaflow_repro.settings import load_settings

    assert load_settings(environ={"REPRO_BATCH_CACHE": text}).batch_cache == text


@pytest.mark.parametrize(
    "text", ["relative/path", "/var/cache/my repro", "/var/$(reboot)", "/var/../etc", "/", "/mnt/c++"]
)
def test_a_batch_cache_that_cannot_go_into_a_jobs_command_is_refused_naming_the_setting(text):
    from metaflow_repro.errors import BadInput
    from metaflow_repro.settings import load_settings

    with pytest.raises(BadInput, match="REPRO_BATCH_CACHE=.* is not valid: expected an absolute path"):
        load_settings(environ={"REPRO_BATCH_CACHE": text})


def test_platform_names_are_the_models():
    from metaflow_repro.model.platforms import PLATFORMS
    from metaflow_repro.settings import PLATFORM_NAMES

    assert sorted(PLATFORM_NAMES) == sorted(PLATFORMS)


def test_relative_package_sources_are_the_pyproject_folders_or_the_current_ones(tmp_path, monkeypatch):
    folder = project(tmp_path / "proj", 'find-links = ["links", "https://x/y", "file:///w"]\nindex-url = "../index"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(folder, environ={})
    assert s.find_links == (str(folder / "links"), "https://x/y", "file:///w")
    assert s.index_url == str(tmp_path / "index")
    s = load_settings(folder, environ={"REPRO_FIND_LINKS": "here", "REPRO_INDEX_URL": "http://127.0.0.1:9/simple"})
    assert s.find_links == (str(elsewhere / "here"),) and s.index_url == "http://127.0.0.1:9/simple"


def test_a_missing_local_package_source_names_its_setting(tmp_path):
    from metaflow_repro.settings import check_package_sources

    folder = project(tmp_path, 'find-links = ["links"]\n')
    (folder / "links").mkdir()
    check_package_sources(load_settings(folder, environ={}))  # there: fine
    (folder / "links").rmdir()
    there = {"REPRO_FIND_LINKS": str(tmp_path)}  # the variable wins over the key
    with pytest.raises(BadInput, match=r"pyproject.toml: \[tool.repro\] find-links: .*links does not exist"):
        check_package_sources(load_settings(folder, environ={}))
    with pytest.raises(BadInput, match="REPRO_INDEX_URL: /nowhere does not exist"):
        check_package_sources(load_settings(folder, environ={"REPRO_INDEX_URL": "file:///nowhere", **there}))
    check_package_sources(load_settings(folder, environ={"REPRO_INDEX_URL": "https://127.0.0.1:9/simple", **there}))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--run-id-file", "x"], "--run-id-file: repro passes this Metaflow option itself"),
        (["--alpha", "1", "--run-id-file=x"], "--run-id-file: repro passes"),
        (["--alpha", "a\0b"], "option --alpha: the value 'a\\x00b' holds a NUL byte"),
        (["--alpha=a\0b"], "option --alpha: the value"),
    ],
)
def test_metaflow_args_repro_cannot_pass_on(args, words):
    from metaflow_repro.settings import check_metaflow_args

    with pytest.raises(BadInput) as err:
        check_metaflow_args(args, "F/1")
    assert str(err.value).startswith("F/1: ") and words in str(err.value)
    assert check_metaflow_args(["--alpha", "a b", "--max-workers", "2"]) == ["--alpha", "a b", "--max-workers", "2"]


def test_a_pyproject_that_is_not_text_is_bad_input(tmp_path):
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.repro]\nhome = '\xd0\x00\xff'\n")
    with pytest.raises(BadInput, match="pyproject.toml: cannot read .tool.repro.: the file is not UTF-8 text"):
        load_settings(tmp_path, environ={})
