"""py-rattler in a short-lived process of its own, so that no process of repro's ever loads it.

py-rattler runs tokio worker threads that can still be winding down when CPython finalises, and the
process then dies with SIGABRT or SIGSEGV after its work is done (2 runs in 6 of the channel builder, and
any process that had solved or installed: the command line, Metaflow's runtime building conda envs). So
every rattler call is one request to ``python -m metaflow_repro.env.rattler_worker``: one JSON object on
stdin (``{"op": ..., ...}``), one on stdout (``{"result": ...}`` or ``{"error": {"kind", "message"}}``),
then the worker flushes and leaves with ``os._exit``, skipping the finalisation that crashes.

``ask`` (the caller's side) runs one request with a timeout and turns every way it can fail into repro's
errors: ``RattlerFailed`` (an ``InfraError``) when rattler raised (its exception's type name is ``kind``,
so a caller can make a ``SolverError`` a resolution error), ``InfraError`` when the worker timed out,
crashed or answered something that is not an answer. Only the worker's side imports rattler.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from metaflow_repro.errors import InfraError

MODULE = "metaflow_repro.env.rattler_worker"
#: Seconds a request may take: a solve may first download a large channel's repodata, an install
#: extract gigabytes (the package files are local and verified by then).
TIMEOUTS = {"solve": 1800.0, "install": 3600.0, "index": 600.0}
#: The error kind of a worker whose interpreter has no py-rattler.
NO_RATTLER = "NoRattler"
#: The tail of the worker's stderr a failure shows.
STDERR_TAIL = 2000


class RattlerFailed(InfraError):
    """rattler raised in the worker: ``kind`` is its exception's type name, ``detail`` its words."""

    def __init__(self, message: str, *, kind: str, detail: str):
        super().__init__(message)
        self.kind, self.detail = kind, detail


# -- the caller's side ---------------------------------------------------------------------------


def worker_env(environ: dict[str, str]) -> dict[str, str]:
    """The worker's environment: the folder holding metaflow_repro (however this process found it) first on
    PYTHONPATH, then the caller's absolute entries (a relative or empty one meant the caller's folder)."""
    root = str(Path(__file__).resolve().parents[2])
    given = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    return {**environ, "PYTHONPATH": os.pathsep.join([root, *given])}


def ask(op: str, request: dict, *, where: str, timeout: float | None = None) -> Any:
    """Run one ``op`` in a fresh worker process and return its result (see the module's docstring). The worker
    starts in an empty folder of its own: ``python -m`` puts its current folder first on sys.path, and a
    ``json.py`` or ``rattler.py`` in the caller's would be imported instead (``-P`` is Python 3.11+ only)."""
    timeout = TIMEOUTS.get(op, 600.0) if timeout is None else timeout
    try:
        with tempfile.TemporaryDirectory(prefix="repro-rattler-") as neutral:
            proc = subprocess.run(
                [sys.executable, "-m", MODULE],
                input=json.dumps({"op": op, **request}),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=worker_env(dict(os.environ)),
                cwd=neutral,
            )
    except subprocess.TimeoutExpired:
        raise InfraError(
            f"{where}: rattler ({op}) did not finish within {timeout:.0f} s and was stopped; "
            "check that the conda channels answer, then retry"
        ) from None
    return read_answer(op, proc.returncode, proc.stdout, proc.stderr, where)


def read_answer(op: str, returncode: int, stdout: str, stderr: str, where: str) -> Any:
    """The result of a worker's answer, or the error it stands for (pure: the process's outcome in)."""
    tail = stderr.strip()[-STDERR_TAIL:]
    try:
        answer = json.loads(stdout) if returncode == 0 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not ({"result"} <= set(answer) or _is_error(answer.get("error"))):
        how = _how_it_ended(returncode)
        raise InfraError(
            f"{where}: the rattler worker ({op}) {how} without an answer"
            + (f":\n{tail}" if tail else "")
            + "\nThis is a crash of py-rattler or of its process; retrying may help."
        )
    if "error" in answer:
        kind, words = answer["error"]["kind"], answer["error"]["message"]
        if kind == NO_RATTLER:  # a dependency; kept for a clear message
            raise InfraError(
                f"{where}: conda-source = 'conda' needs py-rattler ({words}): pip install 'py-rattler>=0.28,<0.29'"
            )
        raise RattlerFailed(f"{where}: rattler ({op}) failed ({kind}): {words}", kind=kind, detail=words)
    return answer["result"]


def _is_error(error: object) -> bool:
    return isinstance(error, dict) and isinstance(error.get("kind"), str) and isinstance(error.get("message"), str)


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}" if returncode else "answered something that is not JSON"


# -- the worker's side (the only code that imports rattler) ---------------------------------------


def _generic(r: Any, items: list[str]) -> list:
    out = []
    for item in items:
        name, version, build = item.split("=")
        out.append(r.GenericVirtualPackage(r.PackageName(name), r.Version(version), r.BuildString(build)))
    return out


def _detect(r: Any, leave_out: list[str]) -> list[str]:
    """This machine's virtual packages as ``name=version=build``, without those named in ``leave_out``."""
    out = []
    for vp in r.VirtualPackage.detect():
        g = vp.into_generic()
        if g.name.normalized not in leave_out:
            out.append(f"{g.name.normalized}={g.version}={g.build_string!s}")
    return sorted(out)


def _record(rec: Any) -> dict:
    return {
        "name": rec.name.normalized,
        "version": str(rec.version),
        "channel": rec.channel or "",
        "file_name": rec.file_name,
        "url": rec.url,
        "sha256": rec.sha256.hex() if rec.sha256 is not None else None,
        "md5": rec.md5.hex() if rec.md5 is not None else None,
        "size": int(rec.size or 0),
        "subdir": str(rec.subdir),
        "build": str(rec.build),
    }


def solve(r: Any, req: dict) -> dict:
    """Solve ``specs`` for ``platform`` (and noarch) against ``channels``. ``virtual`` None: this machine's,
    detected (less ``leave_out``). A local channel is read afresh every time: its repodata can change within
    the same second as a cached copy (a re-index), which a cache keyed on file times would not notice."""
    virtual = req["virtual"] if req["virtual"] is not None else _detect(r, req["leave_out"])
    local = {u: r.SourceConfig(cache_action="no-cache") for u in req["channels"] if u.startswith("file:")}
    gateway = r.Gateway(cache_dir=req["cache_dir"], per_channel_config=local)
    records = asyncio.run(
        r.solve(
            [r.Channel(u) for u in req["channels"]],
            req["specs"],
            gateway=gateway,
            platforms=[req["platform"], "noarch"],
            virtual_packages=_generic(r, virtual),
        )
    )
    return {"virtual": virtual, "records": [_record(rec) for rec in records]}


def install(r: Any, req: dict) -> None:
    """Link ``records`` (each: its checked index.json, file URL, hashes) into ``prefix``, no link scripts."""
    recs = []
    for item in req["records"]:
        record = r.PackageRecord.from_index_json(
            item["index"], size=item["size"], sha256=item["sha256"], md5=item["md5"]
        )
        recs.append(r.RepoDataRecord(record, item["file"], item["url"], item["channel"]))
    asyncio.run(
        r.install(
            recs,
            req["prefix"],
            cache_dir=req["cache_dir"],
            show_progress=False,
            execute_link_scripts=False,
            platform=None,
        )
    )


def index(r: Any, req: dict) -> None:
    """Write the repodata of the channel folder ``folder``."""
    import rattler.index

    result = rattler.index.index_fs(Path(req["folder"]), write_zst=False, write_shards=False, force=True)
    if asyncio.iscoroutine(result):
        asyncio.run(result)


OPS = {"solve": solve, "install": install, "index": index}


def serve(text: str) -> dict:
    """The answer to one request (rattler's exceptions become an error answer)."""
    try:
        req = json.loads(text)
        do = OPS[req["op"]]
        try:
            import rattler
        except ImportError:
            return {"error": {"kind": NO_RATTLER, "message": f"py-rattler is not installed for {sys.executable}"}}
        return {"result": do(rattler, req)}
    except Exception as exc:  # rattler raises its own exception types per failure; the words travel
        return {"error": {"kind": type(exc).__name__, "message": str(exc).strip() or repr(exc)}}


def main() -> None:  # pragma: no cover - ends with os._exit (coverage needs patch = _exit to see it)
    answer_to = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else written to stdout (rattler's own output) goes to stderr
    answer = serve(sys.stdin.read())
    try:
        text = json.dumps(answer)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"error": {"kind": type(exc).__name__, "message": f"unserialisable answer: {exc}"}})
    answer_to.write(text)
    answer_to.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter finalisation: rattler's threads may still be running


if __name__ == "__main__":
    main()
