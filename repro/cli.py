"""``repro`` command line. Thin: parse arguments, call the engine, print, map errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tabulate import tabulate

from . import __version__
from .errors import EXIT_DRIFT, EXIT_OK, ReproError

FLOW_HELP = "a flow file, or a folder whose *.py flow files are all used"


def _flow_files(paths: list[str]) -> list[Path]:
    from .errors import BadInput

    out = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.py") if not f.name.startswith(("_", "test_")))
            if not found:
                raise BadInput(f"{p}: no flow files (*.py) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise BadInput(f"{p}: no such flow file or folder")
    return out


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_lock(args) -> int:
    from .engine import lock_flow, open_flow, spec_drift, target_platforms
    from .export import to_pylock

    status = EXIT_OK
    for path in _flow_files(args.flow):
        flow = open_flow(path)
        if args.check:
            drift = spec_drift(flow, target_platforms(flow, args.platform))
            if drift:
                status = EXIT_DRIFT
                print(f"{path}: the lock {flow.lock_file.name} does not match the flow {flow.name}:")
                for d in drift:
                    for line in d.lines:
                        print(f"  {d.step}: {line}")
                print(f"  run `repro lock {path}` to update it")
            else:
                print(f"{path}: lock is up to date ({len(flow.specs)} steps)")
            continue
        result = lock_flow(flow, platforms=args.platform, log=_log)
        if result.written:
            print(f"{path}: wrote {flow.lock_file.name}")
            for step, lines in result.changes.items():
                for line in lines:
                    print(f"  {step}: {line}")
        else:
            print(f"{path}: {flow.lock_file.name} is up to date")
        if args.export_pylock:
            outdir = Path(args.export_pylock)
            outdir.mkdir(parents=True, exist_ok=True)
            for step, sl in result.lock.steps.items():
                for pname, pl in sl.platforms.items():
                    target = outdir / f"pylock.{path.stem}-{step}-{pname}.toml".replace("_", "-")
                    target.write_text(to_pylock(pl, flow.name, step))
                    print(f"  exported {target}")
    return status


def _state_rows(flow, check_fingerprint: bool = True):
    from . import fingerprint
    from . import platforms as plats
    from .engine import environments

    local = plats.local_platform_name()
    envs = environments(flow.settings)
    rows = []
    lock = flow.lock
    for step, spec in flow.specs.items():
        sl = lock.steps.get(step) if lock else None
        stale = sl is None or sl.spec_id != spec.spec_id
        pl = sl.platforms.get(local) if sl and not stale else None
        libs = ", ".join(f"{n}=={v}" for n, v in spec.libraries) or "-"
        if spec.disabled:
            rows.append([step, spec.spec_id[:12], "-", "user's", "disabled", spec.kind, "user env", "-"])
            continue
        if pl is None:
            rows.append([step, spec.spec_id[:12], "-", spec.python, libs, spec.source,
                         "not locked" if sl is None else "lock stale", "-"])
            continue
        built = envs.get(pl.env_id)
        state, fp_state = ("built", "-") if built else ("not built", "-")
        if built and check_fingerprint:
            now = fingerprint.take(built.python)
            problems = fingerprint.differences(now, pl) + fingerprint.changed_on_disk(built.fingerprint, now)
            fp_state = "matches lock" if not problems else "DRIFT: " + "; ".join(problems)
        rows.append([step, spec.spec_id[:12], pl.env_id[:12], pl.python,
                     f"{libs} (+{len(pl.packages) - len(spec.libraries)})" if spec.libraries else
                     f"{len(pl.packages)} implicit", spec.source, state, fp_state])
    return rows


def cmd_env_show(args) -> int:
    from .engine import open_flow

    status = EXIT_OK
    headers = ["step", "spec id", "env id", "python", "packages", "source", "state", "fingerprint"]
    for path in _flow_files(args.flow):
        flow = open_flow(path)
        rows = _state_rows(flow, check_fingerprint=not args.no_fingerprint)
        if any(r[7].startswith("DRIFT") for r in rows):
            status = EXIT_DRIFT
        print(f"{flow.name} ({path})")
        print(tabulate(rows, headers=headers, tablefmt="simple"))
        print()
    return status


def cmd_env_build(args) -> int:
    from .engine import build_flow, open_flow

    for path in _flow_files(args.flow):
        flow = open_flow(path)
        built = build_flow(flow, steps=args.step, offline=args.offline, log=_log)
        for step, env in built.items():
            if env is None:
                print(f"{flow.name}.{step}: disabled (runs in the user's environment)")
            else:
                how = "reused" if env.reused else "built"
                print(f"{flow.name}.{step}: {how} env {env.env_id[:12]} at {env.path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro",
        description="Prove a Metaflow flow's results can be reproduced. Exit codes: 0 ok, "
                    "1 a difference or drift was found, 2 bad input, 3 infrastructure failure.")
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("lock", help="resolve every step's environment and write <flow>.repro.lock")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument("--platform", action="append", metavar="NAME",
                   help="lock for this platform (repeatable): linux-64, linux-aarch64, osx-64, osx-arm64, win-64")
    p.add_argument("--check", action="store_true",
                   help="do not write: exit 1 and show what differs if the lock no longer matches the flow")
    p.add_argument("--export-pylock", metavar="DIR",
                   help="also write a PEP 751 pylock.<flow>-<step>-<platform>.toml per step into DIR")
    p.set_defaults(func=cmd_lock)

    env = sub.add_parser("env", help="inspect and build step environments")
    esub = env.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    p = esub.add_parser("show", help="table of steps, spec ids, env ids and their state")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument("--no-fingerprint", action="store_true", help="skip re-fingerprinting built environments")
    p.set_defaults(func=cmd_env_show)
    p = esub.add_parser("build", help="build (or reuse) every step's environment")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument("--step", action="append", help="only this step (repeatable)")
    p.add_argument("--offline", action="store_true",
                   help="never touch the network: use the lock as it is and the package cache only")
    p.set_defaults(func=cmd_env_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("METAFLOW_USER", os.environ.get("USER") or "repro")
    try:
        return args.func(args)
    except ReproError as exc:
        print(f"repro: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
