# A Metaflow card of type "repro": `--with card:type=repro` or `@card(type="repro")` shows, in Metaflow's
# card viewer, the step's environment (env id, Python, the locked packages), its fingerprint status and
# whether each of the task's artifacts unpickles in the step's own environment.
# Runs inside the task's card process: standard library and Metaflow only, Python 3.7+.
import html
import json
import os
import sys

from metaflow.plugins.cards.card_modules.card import MetaflowCard

from . import protocol

_CSS = (
    "body{font-family:system-ui,sans-serif;color:#1f2328;margin:1rem}"
    "table{border-collapse:collapse;margin:.4rem 0 1rem}th,td{border:1px solid #d0d7de;padding:.2rem .5rem;"
    "text-align:left}th{background:#f6f8fa}.ok{background:#dafbe1}.fails{background:#ffebe9}.caught{background:#fff8c5}"
    ".unknown{background:#eaeef2}code{font-family:ui-monospace,monospace;font-size:.85rem}"
)


def read_lock_packages(lock_file, step, platform=None):
    """The packages the lock names for ``step``: [(name, version, sha256)], from the lock file's own
    layout (``[[steps.<step>.platforms.<platform>.packages]]`` tables of ``key = "value"`` lines)."""
    try:
        with open(lock_file, "r", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (IOError, OSError):
        return None
    prefix = "[[steps.%s.platforms." % step
    packages, current, platforms = [], None, []
    for raw in lines:
        line = raw.strip()
        if line.startswith("["):
            current = None
            if line.startswith(prefix) and line.endswith(".packages]]"):
                plat = line[len(prefix) : -len(".packages]]")]
                if plat not in platforms:
                    platforms.append(plat)
                if platform is None or plat == platform:
                    current = {"platform": plat}
                    packages.append(current)
            continue
        if current is not None and " = " in line:
            key, value = line.split(" = ", 1)
            if value.startswith('"') and value.endswith('"'):
                current[key.strip()] = value[1:-1]
    if platform is None and platforms:
        packages = [p for p in packages if p["platform"] == platforms[0]]
    return [(p.get("name", "?"), p.get("version", "?"), p.get("sha256", "")) for p in packages]


def _metadata(task):
    try:
        return dict(task.metadata_dict)
    except Exception:  # noqa: BLE001 - a card must render whatever the metadata service says
        return {}


#: the artifact Metaflow's @catch keeps the exception it handled in
CATCH_ARTIFACT = "_catch_exception"


def caught_line(task):
    """ "caught ValueError: x is odd (in compute_failed)" when @catch handled an exception this task's step
    raised (Metaflow's ``_success`` is false, the run goes on); None otherwise (a later task that
    carries the exception on is not one)."""
    try:  # by name: the client lists no artifact of Metaflow's own ("_...") in ``task.artifacts``
        if CATCH_ARTIFACT not in task or ("_success" in task and task["_success"].data):
            return None
        caught = task[CATCH_ARTIFACT]
        wrapper = caught.data
        var = sorted(a.id for a in task.artifacts if a.id != CATCH_ARTIFACT and a.sha and a.sha == caught.sha)
    except Exception:  # noqa: BLE001 - a card must render whatever the datastore holds
        return None
    kind = str(getattr(wrapper, "type", "") or "Exception")
    if kind.startswith("builtins."):
        kind = kind[len("builtins.") :]
    where = " (in %s)" % var[0] if var else ""
    return "caught %s: %s%s" % (kind, getattr(wrapper, "exception", ""), where)


def _caught_rows(task):
    caught = caught_line(task)
    return ["<tr><th>outcome</th><td class='caught'>%s</td></tr>" % html.escape(caught)] if caught else []


def reads_section(meta):
    """The HTML listing what the task read that no snapshot may hold (its ``protocol.META_READS``): files
    outside the flow's folder, network endpoints (elsewhere, then loopback), files of the flow's folder
    (kept as data files when the code package lacks them); [] when it reported none."""
    try:
        report = json.loads(meta.get(protocol.META_READS) or "{}")
    except ValueError:
        report = {}
    if not isinstance(report, dict) or not report:
        return []
    if not report.get(protocol.READS_WATCHED, True):
        return ["<h3>Reads</h3><p class='unknown'>not watched: this interpreter has no audit hooks (Python 3.7)</p>"]
    rows = []
    for key, count, what in (
        (protocol.READS_OUTSIDE, protocol.READS_OUTSIDE_COUNT, "file outside the snapshot"),
        (protocol.READS_HOSTS, protocol.READS_HOSTS_COUNT, "network endpoint"),
        (protocol.READS_LOOPBACK, protocol.READS_LOOPBACK_COUNT, "network endpoint on this machine (loopback)"),
        (protocol.READS_FLOW, protocol.READS_FLOW_COUNT, "file of the flow's folder (a data file)"),
    ):
        listed = [str(x) for x in report.get(key) or []] if isinstance(report.get(key) or [], list) else []
        rows += [
            "<tr><td class='%s'>%s</td><td><code>%s</code></td></tr>"
            % ("ok" if key == protocol.READS_FLOW else "fails", html.escape(what), html.escape(x))
            for x in listed
        ]
        more = report.get(count, 0) - len(listed) if isinstance(report.get(count), int) else 0
        if more > 0:
            rows.append("<tr><td>%s</td><td>and %d more</td></tr>" % (html.escape(what), more))
    if not rows:
        return []
    return (
        [
            "<h3>Read outside the snapshot</h3><p>A replay cannot give back the files outside the snapshot and "
            "the network endpoints (data files of the flow's folder are kept up to input-max-bytes).</p>"
            "<table><thead><tr><th>what</th><th>where</th></tr></thead><tbody>"
        ]
        + rows
        + ["</tbody></table>"]
    )


def _platform():
    machine = os.uname().machine if hasattr(os, "uname") else ""
    if sys.platform.startswith("linux"):
        return "linux-aarch64" if machine in ("aarch64", "arm64") else "linux-64"
    if sys.platform == "darwin":
        return "osx-arm64" if machine == "arm64" else "osx-64"
    return "win-64"


class ReproCard(MetaflowCard):
    type = "repro"

    def __init__(self, options=None, components=None, graph=None, flow=None, **kwargs):
        self._options = options or {}

    def render(self, task):
        meta = _metadata(task)
        env_id = meta.get(protocol.META_ENV_ID, "")
        try:
            fingerprint = json.loads(meta.get(protocol.META_FINGERPRINT) or "{}")
        except ValueError:
            fingerprint = {}
        step = task.parent.id
        flow_file = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else ""
        lock_file = flow_file[:-3] + protocol.LOCK_SUFFIX if flow_file else ""
        locked = read_lock_packages(lock_file, step, _platform()) if lock_file else None
        python = fingerprint.get("python") or "%d.%d.%d" % sys.version_info[:3]
        if env_id == protocol.DISABLED:
            fp_status, fp_class = "outside isolation (disabled=True): no fingerprint", "unknown"
        elif env_id and fingerprint.get("digest"):
            fp_status = "matches the environment built from the lock (checked when the task started)"
            fp_class = "ok"
        else:
            fp_status, fp_class = "unknown: the task registered no repro fingerprint", "unknown"
        parts = [
            "<style>%s</style>" % _CSS,
            "<h2>repro: %s</h2>" % html.escape(task.pathspec),
            "<table><tbody>",
            "<tr><th>env id</th><td><code>%s</code></td></tr>" % html.escape(env_id or "-"),
            "<tr><th>python</th><td>%s</td></tr>" % html.escape(python),
            "<tr><th>fingerprint</th><td class='%s'>%s</td></tr>" % (fp_class, html.escape(fp_status)),
            "<tr><th>code package</th><td><code>%s</code></td></tr>"
            % html.escape(meta.get(protocol.META_CODE_SHA, "") or "-"),
            "<tr><th>PYTHONHASHSEED</th><td>%s</td></tr>"
            % html.escape(meta.get(protocol.META_PYTHONHASHSEED, "") or "-"),
        ]
        parts += _caught_rows(task)
        parts.append("</tbody></table>")
        parts += reads_section(meta)
        if locked:
            parts.append(
                "<h3>Locked packages (%d, %s)</h3><table><thead><tr><th>package</th><th>version</th>"
                "<th>sha256</th></tr></thead><tbody>" % (len(locked), html.escape(os.path.basename(lock_file)))
            )
            parts += [
                "<tr><td>%s</td><td>%s</td><td><code>%s</code></td></tr>"
                % (html.escape(n), html.escape(v), html.escape(s[:16]))
                for n, v, s in sorted(locked)
            ]
            parts.append("</tbody></table>")
        elif fingerprint.get("distributions"):
            dists = sorted(fingerprint["distributions"].items())
            parts.append(
                "<h3>Packages in the environment (%d)</h3><table><thead><tr><th>package</th>"
                "<th>version</th></tr></thead><tbody>" % len(dists)
            )
            parts += ["<tr><td>%s</td><td>%s</td></tr>" % (html.escape(n), html.escape(str(v))) for n, v in dists]
            parts.append("</tbody></table>")
        parts.append(
            "<h3>Pickle checks in this step's environment</h3><table><thead><tr><th>artifact</th>"
            "<th>sha1</th><th>status</th><th>detail</th></tr></thead><tbody>"
        )
        for name, sha, status, detail in self._pickle_checks(task):
            parts.append(
                "<tr><td>%s</td><td><code>%s</code></td><td class='%s'>%s</td><td>%s</td></tr>"
                % (html.escape(name), html.escape(sha[:12]), status, status, html.escape(detail))
            )
        parts.append(
            "</tbody></table><p>Every environment that reads these artifacts is checked by "
            "<code>repro run</code> / <code>pytest --repro</code> (<code>repro report</code>).</p>"
        )
        return "<html><body>%s</body></html>" % "\n".join(parts)

    def _pickle_checks(self, task):
        rows = []
        try:
            artifacts = list(task.artifacts)
        except Exception as exc:  # noqa: BLE001
            return [("-", "", "unknown", "could not list artifacts: %s" % exc)]
        for a in artifacts:
            name = a.id
            if name.startswith("_") or name in ("name",):
                continue  # Metaflow's own
            try:
                a.data  # noqa: B018 - unpickling it is the check
                rows.append((name, a.sha or "", "ok", ""))
            except Exception as exc:  # noqa: BLE001 - what failing to unpickle looks like
                rows.append((name, a.sha or "", "fails", "%s: %s" % (type(exc).__name__, exc)))
        return sorted(rows, key=lambda r: (r[2] == "ok", r[0]))
