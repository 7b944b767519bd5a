"""Renderers of the report document (``document.py``): a terminal table, Markdown, JSON (schema:
``report.schema.json``, generated from the document's types) and a self-contained HTML page."""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

from tabulate import tabulate

from metaflow_repro.errors import printable_lines
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model.record import PickleStatus
from metaflow_repro.report.document import FlowReport, PickleRow, ReportDocument, StepOutcome, StepReport, plain

SCHEMA_FILE = Path(__file__).with_name("report.schema.json")


def _as_dict(doc: ReportDocument | dict) -> dict:
    return doc.to_dict() if isinstance(doc, ReportDocument) else doc


def _typed(doc: ReportDocument | dict) -> ReportDocument:
    """The document, also when it was read back from JSON: what it shows is decided by its types."""
    return doc if isinstance(doc, ReportDocument) else ReportDocument.from_dict(doc)


# -- renderers -----------------------------------------------------------------------------------


def _counts(d: dict | None, keys) -> str:
    return "-" if d is None else "/".join(str(d.get(k, 0)) for k in keys)


def step_rows(flow: dict) -> list[list]:
    return [
        [
            s["step"],
            (s["env_id"] or "-")[:12],
            s["python"] or "-",
            s["packages"],
            _counts(s["artifacts"], ("identical", "equivalent", "different")),
            _counts(s["pickle"], [k.value for k in PickleStatus]),
            s["outcome"],
        ]
        for s in flow["steps"]
    ]


PICKLE_NOTE = "pickle ok/warn/fail: checks of the artifacts each step writes, in every step environment that reads them"
STEP_HEADERS = ["step", "env id", "python", "packages", "artifacts id/eq/diff", "pickle ok/warn/fail", "outcome"]


def baseline_note(flow: dict) -> str:
    """What the reports say when the baseline ran other code than this run ("" otherwise)."""
    b = flow.get("baseline")
    if not b or not b.get("code_changed"):
        return ""
    return (
        f"the baseline {b['ref']} ran other code: its code package ({(b.get('code') or '?')[:12]}) differs "
        "from this run's, so differences may come from the code"
    )


def replay_where(flow: dict) -> str:
    """Where the run was replayed and what its record says ("" without a replay)."""
    r = flow.get("replay")
    if not r:
        return ""
    ran = f"ran on {r['executor']}" if r.get("executor") else "did not run"
    image = f" (image {r['image']})" if r.get("image") else ""
    run = f", recorded as {r['run']}" if r.get("run") else ""
    return f"replay on {r['on']}: {ran}{image}{run}"


def terminal(doc: ReportDocument | dict) -> str:
    typed = _typed(doc)
    doc = _as_dict(typed)
    parts = []
    for f, flow in zip(doc["flows"], typed.flows, strict=True):
        parts.append(f"{f['flow']} ({f['file']}) run {f['run'] or '-'}: {f['status']}")
        if baseline_note(f):
            parts.append(f"note: {baseline_note(f)}")
        parts.append(tabulate(step_rows(f), headers=STEP_HEADERS, tablefmt="simple"))
        if f.get("replay"):
            parts.append(f"{replay_where(f)}: {f['replay']['verdict'] or 'not run'}")
        parts += [f"note: {line}" for line in flow.outside_lines()]
    if doc["flows"]:
        parts.append(PICKLE_NOTE)
    return printable_lines("\n".join(parts), max_lines=sys.maxsize)  # names from records: escaped, bounded


def to_json(doc: ReportDocument | dict) -> str:
    doc = _as_dict(doc)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# -- Markdown and HTML: templates/report.md and templates/report.html (Jinja2, HTML autoescaped) ------

TEMPLATES = Path(__file__).with_name("templates")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem 2rem;color:#1f2328;background:#fff}
h1{font-size:1.5rem;margin:.2rem 0} h2{font-size:1.2rem;display:inline;margin:0} h3{font-size:1rem;display:inline;margin:0}
.meta,.note,.file{color:#59636e;font-size:.85rem} .meta{margin:.2rem 0 .6rem}
table{border-collapse:collapse;margin:.5rem 0 .8rem} th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:left}
th{background:#f6f8fa} .passed,.ok,.identical,.equivalent{background:#dafbe1} .failed,.fails,.different{background:#ffebe9}
.warning,.caught{background:#fff8c5} .not-run{background:#eaeef2} .expected-failure{background:#ddf4ff}
code,pre{font-family:ui-monospace,Menlo,monospace;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0}
.badge{padding:.1rem .5rem;border-radius:.8rem;font-size:.85rem;border:1px solid #d0d7de}
.verdict{font-size:1.15rem;font-weight:600;padding:.4rem .8rem;border-radius:.4rem;display:inline-block;margin:.2rem 0}
.verdict.passed{background:#1a7f37;color:#fff} .verdict.failed{background:#cf222e;color:#fff}
section.flow{border-top:1px solid #d0d7de;padding:.6rem 0} summary{cursor:pointer;margin:.3rem 0}
details details{margin-left:1rem}
"""


def _cls(value: str) -> str:
    return str(value).replace(" ", "-")


def _why(p: dict) -> str:
    return "; ".join(x for x in (p["detail"], p["static"]) if x)


def _pickle_view(row: PickleRow) -> dict:
    p = plain(row)
    return {**p, "reader_env": p["reader_env"][:12], "read_by": ", ".join(p["reader_steps"]), "why": _why(p)}


def _step_view(step: StepReport) -> dict:
    st = plain(step)
    return {
        **st,
        "env_id": (st["env_id"] or "-")[:12],
        "python": st["python"] or "-",
        "artifacts": _counts(st["artifacts"], ("identical", "equivalent", "different")),
        "pickle": _counts(st["pickle"], [k.value for k in PickleStatus]),
        "outcome_class": _cls(st["outcome"]),
        "open": step.outcome is StepOutcome.FAILED,
    }


PICKLE_HEADERS = ["step", "task", "artifact", "reader env", "read by", "status", "why"]


def _pickle_tables(problems: list[dict], ok: list[dict]) -> dict:
    """The Markdown tables of a flow's pickle checks: the problems, and those that load fine."""
    return {
        "pickle_table": tabulate(
            [
                [r["step"], r["task"], r["artifact"], r["reader_env"], r["read_by"], r["status"], r["why"]]
                for r in problems
            ],
            headers=PICKLE_HEADERS,
            tablefmt="github",
        ),
        "pickle_ok_table": tabulate(
            [[r["step"], r["task"], r["artifact"], r["reader_env"], r["read_by"], "ok"] for r in ok],
            headers=PICKLE_HEADERS[:-1],
            tablefmt="github",
        ),
    }


def _flow_view(n: int, flow: FlowReport, only: bool) -> dict:
    """One flow as the templates show it; ``only``: the document's single flow, always shown open."""
    f = plain(flow)
    problems = [_pickle_view(p) for p in flow.pickle_problems()]
    ok = [_pickle_view(p) for p in flow.pickle_ok()]
    where = replay_where(f)
    return {
        **f,
        "anchor": f"flow-{n}",
        "baseline_note": baseline_note(f),
        "baseline_changes": plain(flow.baseline.changes()) if flow.baseline else [],
        "replay_where": where[:1].upper() + where[1:],
        "status_class": _cls(f["status"]),
        "steps": [_step_view(st) for st in flow.steps],
        "steps_passed": flow.steps_passed(),
        "pickle_rows": problems,
        "pickle_ok": ok,
        "pickle_problems": len(problems),
        "pickle_hidden": flow.pickle_hidden(),
        "drift": flow.drift_lines(),
        "outside": flow.outside_lines(),
        "open": not flow.passed or only,
        "steps_table": tabulate(step_rows(f), headers=STEP_HEADERS, tablefmt="github"),
        **_pickle_tables(problems, ok),
    }


def _verdict(doc: ReportDocument) -> str:
    if doc.failed():
        return f"{doc.failed()} of {len(doc.flows)} flow(s) failed"
    return f"all {len(doc.flows)} flow(s) ended as expected" if doc.flows else "no flows"


def _totals(doc: ReportDocument) -> list[tuple[str, int, str]]:
    """The summary's badges: flows per status (those with any), then pickle problems (if any)."""
    totals = [(status.value, n, _cls(status.value)) for status, n in doc.status_counts().items() if n]
    problems = doc.pickle_problems()
    return totals + ([("pickle problem(s)", problems, "fails")] if problems else [])


def view(doc: ReportDocument | dict) -> dict:
    """What the templates show: the document's own decisions (statuses, the problems first), formatted."""
    doc = _typed(doc)
    return {
        "generated_at": doc.generated_at,
        "flows": [_flow_view(n, f, len(doc.flows) == 1) for n, f in enumerate(doc.flows, 1)],
        "verdict": _verdict(doc),
        "verdict_class": "failed" if doc.failed() else "passed",
        "totals": _totals(doc),
        "stores": doc.stores(),
    }


@functools.cache
def _environment(autoescape: bool):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        trim_blocks=autoescape,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def _render(name: str, doc: ReportDocument | dict, autoescape: bool) -> str:
    return (
        _environment(autoescape)
        .get_template(name)
        .render(view=view(doc), css=_CSS, step_headers=STEP_HEADERS, pickle_note=PICKLE_NOTE)
    )


def to_markdown(doc: ReportDocument | dict) -> str:
    text = _render("report.md", doc, autoescape=False)
    return re.sub(r"\n{3,}", "\n\n", text)


def to_html(doc: ReportDocument | dict) -> str:
    return _render("report.html", doc, autoescape=True)


RENDER = {"md": to_markdown, "json": to_json, "html": to_html}


def write(doc: ReportDocument, folder: Path, stem: str = "repro-report") -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, render in RENDER.items():
        path = folder / f"{stem}.{fmt}"
        atomic_write(path, render(doc))
        written.append(path)
    return written
