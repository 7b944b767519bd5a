"""Renderers of an audit (``model/audit``): terminal text, JSON, and a self-contained HTML page with a
timeline of verdicts by run date drawn as inline SVG (no script, nothing fetched). It formats and
decides nothing."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any

from tabulate import tabulate

from metaflow_repro.errors import LINE_CHARS, printable
from metaflow_repro.model.audit import Audit, AuditEntry, AuditVerdict, to_dict
from metaflow_repro.report.render import _CSS, _environment

#: each verdict's lane in the timeline, top to bottom, and its colour
LANES = {
    AuditVerdict.IDENTICAL: "#1a7f37",
    AuditVerdict.EQUIVALENT: "#4ac26b",
    AuditVerdict.DIFFERENT: "#cf222e",
    AuditVerdict.FAILED: "#9a6700",
}
_WIDTH, _LANE, _LEFT, _RIGHT, _TOP = 1000, 34, 120, 30, 14


def summary(audit: Audit) -> str:
    counts = ", ".join(f"{n} {verdict}" for verdict, n in audit.counts().items())
    return f"{len(audit.entries)} run(s) replayed on {audit.on}: {counts}"


def verdict_line(audit: Audit) -> str:
    regressions = audit.regressions
    if regressions:
        return f"{len(regressions)} run(s) that replayed identical in the previous audit no longer do"
    others = sum(1 for e in audit.entries if e.verdict is not AuditVerdict.IDENTICAL)
    if others:
        return f"{others} of {len(audit.entries)} run(s) did not replay identical; none of them did in an earlier audit"
    return f"all {len(audit.entries)} run(s) replayed identical"


def _before(entry: AuditEntry) -> str:
    return entry.previous or "-"


def terminal(audit: Audit, key: str = "") -> str:
    """The audit for a terminal: one row per run, then each run that is not identical with what differed
    and the likely causes."""
    rows = [
        [printable(e.run), e.recorded_at[:19].replace("T", " "), str(e.verdict), _before(e), printable(e.replay or "-")]
        for e in audit.entries
    ]
    lines = [
        f"audit of {printable(audit.store)}: {summary(audit)}",
        tabulate(rows, headers=["run", "recorded", "verdict", "before", "replay"]),
    ]
    for e in audit.entries:
        if e.verdict is not AuditVerdict.IDENTICAL:
            lines += _details(e)
    lines += [f"skipped {printable(s)}" for s in audit.skipped]
    lines.append(("REGRESSION: " if audit.regressions else "") + verdict_line(audit))
    if key:
        lines.append(f"audit kept in the store as {key}")
    return "\n".join(lines) + "\n"


def _details(e: AuditEntry) -> list[str]:
    head = f"{printable(e.run)}: {e.verdict}" + (f" (was {e.previous})" if e.previous else "")
    out = [head]
    out += [f"  {printable(d.describe(), LINE_CHARS)}" for d in e.differences]
    if e.differences_count > len(e.differences):
        out.append(f"  and {e.differences_count - len(e.differences)} more artifact(s)")
    if e.error:
        out.append(f"  error: {printable(e.error, LINE_CHARS)}")
    out += [f"  likely cause: {printable(c, LINE_CHARS)}" for c in e.causes]
    return out


def to_json(audit: Audit, key: str = "") -> str:
    doc = to_dict(audit)
    doc["key"] = key
    doc["regressions"] = [e.run for e in audit.regressions]
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


# -- HTML ----------------------------------------------------------------------------------------------


def _when(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _x_of(entries: tuple[AuditEntry, ...]) -> dict[str, float]:
    """Each run's x in the chart, by its recording time (runs with no readable time at the left)."""
    times = {e.run: _when(e.recorded_at) for e in entries}
    known = [t.timestamp() for t in times.values() if t is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    span, width = high - low, _WIDTH - _LEFT - _RIGHT
    return {
        run: _LEFT + (width / 2 if span == 0 else width * (t.timestamp() - low) / span) if t is not None else _LEFT
        for run, t in times.items()
    }


def timeline_svg(audit: Audit) -> str:
    """Verdicts by run date: one lane per verdict, one dot per run (a ring round a regression), the first
    and last run dates under the axis. Every text is escaped; it names nothing outside the page."""
    height = _TOP * 2 + _LANE * len(LANES) + 20
    xs = _x_of(audit.entries)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" role="img" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" aria-label="verdicts by run date">'
    ]
    lane_y = {verdict: _TOP + _LANE * i + _LANE // 2 for i, verdict in enumerate(LANES)}
    for verdict, y in lane_y.items():
        parts.append(
            f'<text x="{_LEFT - 10}" y="{y + 4}" text-anchor="end" font-size="12" fill="#59636e">{verdict}</text>'
            f'<line x1="{_LEFT}" y1="{y}" x2="{_WIDTH - _RIGHT}" y2="{y}" stroke="#d0d7de"/>'
        )
    for e in audit.entries:
        x, y, colour = xs[e.run], lane_y[e.verdict], LANES[e.verdict]
        ring = ' stroke="#1f2328" stroke-width="3"' if e.regressed else ""
        title = html.escape(
            f"{e.run} recorded {e.recorded_at}: {e.verdict}" + (f" (was {e.previous})" if e.previous else "")
        )
        parts.append(f'<circle cx="{x:.1f}" cy="{y}" r="7" fill="{colour}"{ring}><title>{title}</title></circle>')
    dates = sorted(e.recorded_at[:16].replace("T", " ") for e in audit.entries if e.recorded_at)
    axis_y = _TOP + _LANE * len(LANES) + 12
    if dates:
        parts.append(f'<text x="{_LEFT}" y="{axis_y}" font-size="12" fill="#59636e">{html.escape(dates[0])}</text>')
        parts.append(
            f'<text x="{_WIDTH - _RIGHT}" y="{axis_y}" text-anchor="end" font-size="12" fill="#59636e">'
            f"{html.escape(dates[-1])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _row(e: AuditEntry) -> dict[str, Any]:
    return {
        "run": e.run,
        "anchor": "run-" + "".join(c if c.isalnum() else "-" for c in e.run),
        "recorded": e.recorded_at[:19].replace("T", " "),
        "verdict": str(e.verdict),
        "cls": "different" if e.verdict in (AuditVerdict.DIFFERENT, AuditVerdict.FAILED) else str(e.verdict),
        "before": _before(e),
        "regressed": e.regressed,
        "replay": e.replay or "-",
        "seconds": f"{e.seconds:.1f}",
        "differences": [d.describe() for d in e.differences],
        "more": e.differences_count - len(e.differences),
        "causes": list(e.causes),
        "error": e.error,
    }


def to_html(audit: Audit, key: str = "") -> str:
    from markupsafe import Markup

    bad = bool(audit.regressions) or any(e.verdict is not AuditVerdict.IDENTICAL for e in audit.entries)
    view = {
        "store": audit.store,
        "key": key,
        "finished_at": audit.finished_at[:19].replace("T", " "),
        "on": audit.on,
        "summary": summary(audit),
        "verdict": verdict_line(audit),
        "verdict_class": "failed" if audit.regressions else "warning" if bad else "passed",
        "totals": [
            (verdict, n, "different" if verdict in ("different", "replay failed") else verdict)
            for verdict, n in audit.counts().items()
        ],
        "rows": [_row(e) for e in audit.entries],
        "skipped": list(audit.skipped),
        "open": bad,
    }
    page: str = (
        _environment(True).get_template("audit.html").render(view=view, css=_CSS, timeline=Markup(timeline_svg(audit)))
    )
    return page
