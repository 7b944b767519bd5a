"""Reports: one document (plain data, versioned) rendered as a terminal table, Markdown, JSON
(schema: ``repro/report.schema.json``) and a single self-contained HTML page."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from repro.model import platforms as plats
from repro.model.record import PickleStatus, RunStatus
from repro.fsutil import atomic_write

SCHEMA = "repro.report"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
FORMATS = ("md", "json", "html")


def flow_report(flow: str, file: str, record=None, lock=None, outcomes: dict | None = None,
                comparison=None, drift=None, baseline: str | None = None) -> dict:
    """One flow's part of a report. ``outcomes``: step -> {"outcome": passed|failed|not run, "message"}."""
    outcomes = outcomes or {}
    local = plats.local_platform_name()
    steps = []
    order = list(record.steps) if record else (list(lock.steps) if lock else list(outcomes))
    by_step = comparison.by_step() if comparison else {}
    for step in order:
        s = record.steps.get(step) if record else None
        sl = lock.steps.get(step) if lock else None
        pl = sl.platforms.get(local) if sl else None
        checks = [c for c in (record.pickle_checks if record else ()) if step in c.reader_steps]
        steps.append({
            "step": step,
            "env_id": (s.env_id if s else (pl.env_id if pl else ("disabled" if sl and sl.disabled else ""))),
            "python": pl.python if pl else ("user's" if sl and sl.disabled else ""),
            "packages": len(pl.packages) if pl else 0,
            "tasks": len(s.tasks) if s else 0,
            "fingerprints": sorted({t.fingerprint for t in s.tasks.values()}) if s else [],
            "outcome": outcomes.get(step, {}).get("outcome", "passed" if s and s.tasks else "not run"),
            "message": outcomes.get(step, {}).get("message", ""),
            "artifacts": by_step.get(step) if comparison else None,
            "pickle": {k.value: sum(1 for c in checks if c.status == k) for k in PickleStatus},
        })
    return {
        "flow": flow,
        "file": file,
        "run": record.ref if record else None,
        "status": "failed" if any(s["outcome"] == "failed" for s in steps) or (record and record.status != RunStatus.SUCCESS)
        or record is None else "passed",
        "steps": steps,
        "pickle": [{"step": c.step, "task": c.task, "artifact": c.artifact, "reader_env": c.reader_env,
                    "reader_steps": list(c.reader_steps), "status": PickleStatus(c.status).value, "detail": c.detail, "static": c.static}
                   for c in (record.pickle_checks if record else ())],
        "baseline": None if comparison is None else {
            "ref": baseline or comparison.a,
            "same": comparison.same,
            "results": [{"step": r.step, "task": r.task, "name": r.name, "verdict": r.verdict, "detail": r.detail}
                        for r in comparison.results],
        },
        "drift": drift.as_dict() if drift is not None else None,
    }


def document(flows: list[dict]) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "flows": flows}


# -- renderers -----------------------------------------------------------------------------------

def _counts(d: dict | None, keys) -> str:
    return "-" if d is None else "/".join(str(d.get(k, 0)) for k in keys)


def step_rows(flow: dict) -> list[list]:
    return [[s["step"], (s["env_id"] or "-")[:12], s["python"] or "-", s["packages"],
             _counts(s["artifacts"], ("identical", "equivalent", "different")),
             _counts(s["pickle"], [k.value for k in PickleStatus]), s["outcome"]] for s in flow["steps"]]


STEP_HEADERS = ["step", "env id", "python", "packages", "artifacts id/eq/diff", "pickle ok/warn/fail", "outcome"]


def terminal(doc: dict) -> str:
    parts = []
    for f in doc["flows"]:
        parts.append(f"{f['flow']} ({f['file']}) run {f['run'] or '-'}: {f['status']}")
        parts.append(tabulate(step_rows(f), headers=STEP_HEADERS, tablefmt="simple"))
    return "\n".join(parts)


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def to_markdown(doc: dict) -> str:
    out = [f"# repro report\n\nGenerated {doc['generated_at']}.\n"]
    for f in doc["flows"]:
        out.append(f"## {f['flow']} — {f['status']}\n\nFile `{f['file']}`, run `{f['run'] or '-'}`.\n")
        out.append(tabulate(step_rows(f), headers=STEP_HEADERS, tablefmt="github") + "\n")
        failed = [s for s in f["steps"] if s["message"]]
        for s in failed:
            out.append(f"**{s['step']}**: {s['outcome']}\n\n```\n{s['message']}\n```\n")
        if f["pickle"]:
            out.append("### Pickle compatibility\n")
            rows = [[p["step"], p["task"], p["artifact"], p["reader_env"][:12], ", ".join(p["reader_steps"]),
                     p["status"], "; ".join(x for x in (p["detail"], p["static"]) if x)] for p in f["pickle"]]
            out.append(tabulate(rows, headers=["step", "task", "artifact", "reader env", "read by", "status", "why"],
                                tablefmt="github") + "\n")
        if f["baseline"]:
            diffs = [r for r in f["baseline"]["results"] if r["verdict"] != "identical"]
            out.append(f"### Against {f['baseline']['ref']}: {'same' if f['baseline']['same'] else 'DIFFERENT'}\n")
            for r in diffs:
                out.append(f"- `{r['step']}/{r['task']}.{r['name']}`: **{r['verdict']}** — {r['detail']}")
            out.append("")
        if f["drift"] and any(f["drift"].values()):
            out.append("### Drift\n")
            for kind, lines in f["drift"].items():
                out += [f"- {kind}: {line}" for line in lines]
            out.append("")
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2rem} h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.5rem 0 1rem} th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}
th{background:#f6f8fa} .passed,.ok,.identical,.equivalent{background:#dafbe1} .failed,.fails,.different{background:#ffebe9}
.warning{background:#fff8c5} .not.run{background:#eaeef2} code,pre{font-family:ui-monospace,Menlo,monospace;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere} .badge{padding:.1rem .5rem;border-radius:.8rem}
"""


def _table(headers, rows, status_col=None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{html.escape(str(cell))}"' if i == status_col else ""
            cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(doc: dict) -> str:
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>repro report</title>"
             f"<style>{_CSS}</style></head><body><h1>repro report</h1><p>Generated {html.escape(doc['generated_at'])}.</p>"]
    for f in doc["flows"]:
        parts.append(f"<h2>{html.escape(f['flow'])} <span class='badge {f['status']}'>{f['status']}</span></h2>"
                     f"<p>File <code>{html.escape(f['file'])}</code>, run <code>{html.escape(f['run'] or '-')}</code></p>")
        parts.append(_table(STEP_HEADERS, step_rows(f), status_col=6))
        for s in f["steps"]:
            if s["message"]:
                parts.append(f"<h3>{html.escape(s['step'])}: {s['outcome']}</h3><pre>{html.escape(s['message'])}</pre>")
        if f["pickle"]:
            parts.append("<h3>Pickle compatibility</h3>")
            rows = [[p["step"], p["task"], p["artifact"], p["reader_env"][:12], ", ".join(p["reader_steps"]),
                     p["status"], "; ".join(x for x in (p["detail"], p["static"]) if x)] for p in f["pickle"]]
            parts.append(_table(["step", "task", "artifact", "reader env", "read by", "status", "why"], rows, status_col=5))
        if f["baseline"]:
            parts.append(f"<h3>Against {html.escape(f['baseline']['ref'])}: "
                         f"{'same' if f['baseline']['same'] else 'different'}</h3>")
            rows = [[r["step"], r["task"], r["name"], r["verdict"], r["detail"]] for r in f["baseline"]["results"]]
            parts.append(_table(["step", "task", "artifact", "verdict", "detail"], rows, status_col=3))
        if f["drift"] and any(f["drift"].values()):
            parts.append("<h3>Drift</h3><ul>" + "".join(
                f"<li><b>{kind}</b>: {html.escape(line)}</li>" for kind, lines in f["drift"].items() for line in lines)
                + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


RENDER = {"md": to_markdown, "json": to_json, "html": to_html}


def write(doc: dict, folder: Path, stem: str = "repro-report") -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, render in RENDER.items():
        path = folder / f"{stem}.{fmt}"
        atomic_write(path, render(doc))
        written.append(path)
    return written
