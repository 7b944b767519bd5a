"""`repro --help` stays light (issue 21, item 7): building the parser imports no command's work,
so neither Metaflow, boto3, rattler nor docker is loaded, and only the command being run gets
its module imported and its arguments added."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metaflow_repro.cli.parser import COMMANDS, build_parser

HEAVY = ("metaflow", "boto3", "botocore", "rattler", "docker", "tabulate", "metaflow_repro.operations")


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (its stdout is left alone)."""
    probe = f"import json, sys\n{code}\nsys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_repro_help_imports_nothing_heavy_and_no_command_module():
    loaded = _modules_after(
        "from metaflow_repro.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0"
    )
    assert "metaflow_repro.cli.parser" in loaded  # the probe did build the parser
    assert _heavy(loaded) == []
    assert not {f"metaflow_repro.cli.{name}" for name in COMMANDS} & loaded


def test_no_commands_parser_imports_anything_heavy():
    loaded = _modules_after(
        "from metaflow_repro.cli.parser import COMMANDS, build_parser\nfor name in COMMANDS:\n    build_parser([name])"
    )
    assert {f"metaflow_repro.cli.{name}" for name in COMMANDS} <= loaded  # each command's arguments were added
    assert _heavy(loaded) == []


def test_only_the_command_named_gets_its_arguments():
    args = build_parser(["store", "gc"]).parse_args(["store", "gc", "--dry-run", "--store", "file:///s"])
    assert (args.command, args.store_command, args.dry_run, args.store) == ("store", "gc", True, "file:///s")
    assert args.func.__module__ == "metaflow_repro.cli.store"
    parser = build_parser(["--version"])  # a top-level option is not a command: no command is configured
    with pytest.raises(SystemExit):
        parser.parse_args(["lock", "flow.py"])  # lock's positional `flow` was never added
