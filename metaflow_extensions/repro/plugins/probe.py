"""Fingerprint the Python environment this module runs in.

Runs inside step environments: standard library only, and valid on Python 3.7 to 3.13.
Usable as a script (``python -I probe.py`` prints JSON) or imported (``fingerprint()``).

The fingerprint holds the interpreter (version, implementation, build), the platform and libc,
and every installed distribution with its version, a sha256 of its RECORD file and the count and
total size of the files RECORD lists (so a file edited or deleted on disk shows), plus one digest
over all of it. Paths are reported but kept out of the digest.
"""

import hashlib
import json
import os
import platform
import re
import sys

_NORMALIZE = re.compile(r"[-_.]+")
FINGERPRINT_VERSION = 3  # 3: installer cache metadata (``INSTALLER_CACHE_FILES``) left out
#: files an installer writes about its own cache, not about the distribution: uv's ``uv_cache.json``
#: holds the source file's change time (ctime), so two installs of one lock from the same verified
#: files (on the host, in a Batch container) would differ. Left out of a distribution's fingerprint.
INSTALLER_CACHE_FILES = ("uv_cache.json",)


def _canonical(name):
    return _NORMALIZE.sub("-", name).lower()


def _metadata(dist_info):
    name = version = None
    try:
        with open(os.path.join(dist_info, "METADATA"), "rb") as fh:
            for raw in fh:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    break  # end of headers
                if line.startswith("Name:") and name is None:
                    name = line[5:].strip()
                elif line.startswith("Version:") and version is None:
                    version = line[8:].strip()
    except OSError:
        pass
    if name is None or version is None:  # fall back on the folder name: name-version.dist-info
        stem = os.path.basename(dist_info)[: -len(".dist-info")]
        parts = stem.split("-")
        name = name or parts[0]
        version = version or (parts[1] if len(parts) > 1 else "")
    return name, version


def _kept_lines(blob):
    """A RECORD file's lines but those of installer cache files (<name>.dist-info/uv_cache.json)."""
    kept = []
    for line in blob.decode("utf-8", "replace").splitlines():
        folder, _, name = line.rsplit(",", 2)[0].partition("/")
        if not (name in INSTALLER_CACHE_FILES and folder.endswith(".dist-info")):
            kept.append(line)
    return kept


def _digest(lines):
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def record_digest(blob):
    """sha256 of a RECORD file's lines but those of installer cache files (as ``_record`` takes it)."""
    return _digest(_kept_lines(blob))


def _record(site, dist_info, trust_record=False):
    """(sha256 of RECORD's lines but installer cache files, files listed with a size, their total
    size on disk, files missing).

    With ``trust_record`` the sizes RECORD declares are used instead of asking the disk: right
    after an install from hash-verified wheels they are the same (tested), and the builder saves
    thousands of stat calls. Every later check stats the files for real.
    """
    path = os.path.join(dist_info, "RECORD")
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError:
        return None, 0, 0, 0
    files = size = missing = 0
    kept = _kept_lines(blob)
    for line in kept:
        parts = line.rsplit(",", 2)
        if len(parts) < 3 or not parts[2].strip().isdigit():
            continue  # RECORD itself, and entries without a size (e.g. .pyc)
        files += 1
        if trust_record:
            size += int(parts[2])
            continue
        try:
            size += os.stat(os.path.join(site, parts[0])).st_size
        except OSError:
            missing += 1
    return _digest(kept), files, size, missing


def _site_dirs():
    stdlib = os.path.normcase(os.path.realpath(os.path.dirname(os.__file__)))
    seen = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.normcase(os.path.realpath(entry))
        if real == stdlib or (real.startswith(stdlib + os.sep) and "site-packages" not in real):
            continue
        if real not in seen:
            seen.append(real)
    return seen


def distributions(site_dirs=None, trust_record=False):
    result = {}
    for site in site_dirs if site_dirs is not None else _site_dirs():
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for entry in sorted(names):
            if not entry.endswith(".dist-info"):
                continue
            dist_info = os.path.join(site, entry)
            name, version = _metadata(dist_info)
            key = _canonical(name)
            if key in result:
                continue  # shadowed by an earlier sys.path entry, as the import system would
            record, files, size, missing = _record(site, dist_info, trust_record)
            try:
                with open(os.path.join(dist_info, "INSTALLER"), "rb") as fh:
                    installer = fh.read().decode("utf-8", "replace").strip()
            except OSError:
                installer = ""
            result[key] = {
                "installer": installer,
                "name": key,
                "version": version,
                "record_sha256": record,
                "files": files,
                "bytes": size,
                "missing_files": missing,
                "location": site,
            }
    return [result[k] for k in sorted(result)]


def _libc():
    try:
        lib, ver = platform.libc_ver()
    except Exception:  # noqa: BLE001 - some platforms raise instead of returning ''
        lib, ver = "", ""
    return "%s %s" % (lib, ver) if lib else ""


def interpreter_facts():
    """What identifies the running interpreter (and so, any environment made from it)."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "python": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "build": list(platform.python_build()),
        "compiler": platform.python_compiler(),
        "system": platform.system(),
        "machine": platform.machine(),
        "libc": _libc(),
    }


def conda_packages(prefix):
    """The conda packages linked into ``prefix`` (its ``conda-meta/*.json``), sorted by name."""
    folder = os.path.join(prefix, "conda-meta")
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return out
    for entry in names:
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, entry), "rb") as fh:
                doc = json.loads(fh.read().decode("utf-8"))
        except (OSError, ValueError):
            continue
        out.append({"name": doc.get("name"), "version": doc.get("version"), "build": doc.get("build")})
    return sorted(out, key=lambda d: str(d["name"]))


def fingerprint(site_dirs=None, facts=None, trust_record=False, conda_prefix=None):
    """Fingerprint of the running interpreter's environment, or, from outside it, of the
    environment whose site-packages are ``site_dirs`` made from an interpreter with ``facts``
    (as ``interpreter_facts()`` printed there). Both give the same digest for the same env.
    A conda env (one with ``conda-meta/``: ``sys.prefix`` inside, ``conda_prefix`` from outside)
    also lists its conda packages."""
    dists = distributions(site_dirs, trust_record)
    identity = dict(facts or interpreter_facts())
    identity.pop("conda", None)
    prefix = conda_prefix if conda_prefix is not None else (sys.prefix if facts is None else None)
    conda = conda_packages(prefix) if prefix else []
    if conda:
        identity["conda"] = conda
    identity["distributions"] = [
        {k: d[k] for k in ("name", "version", "record_sha256", "files", "bytes", "missing_files")} for d in dists
    ]
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode("utf-8")
    result = dict(identity)
    result["digest"] = hashlib.sha256(blob).hexdigest()
    # who installed each distribution (uv, pip, conda): shown, not part of the digest
    result["distributions"] = [dict(x, installer=d["installer"]) for x, d in zip(identity["distributions"], dists)]
    if facts is None:
        result["executable"] = sys.executable
        result["prefix"] = sys.prefix
        result["platform"] = platform.platform()
    result["locations"] = {d["name"]: d["location"] for d in dists}
    return result


def compare(expected, actual):
    """What differs between two fingerprints of one environment, in words (empty: identical).

    ``expected`` is the fingerprint taken when the environment was built; ``actual`` one taken now.
    """
    lines = []
    for key in ("python", "implementation", "build", "compiler", "machine", "libc"):
        if expected.get(key) != actual.get(key):
            lines.append(
                "interpreter %s is %s, the environment was built with %s" % (key, actual.get(key), expected.get(key))
            )
    was = dict((d["name"], d) for d in expected.get("conda", []))
    is_now = dict((d["name"], d) for d in actual.get("conda", []))
    for name in sorted(set(was) | set(is_now)):
        b, n = was.get(name), is_now.get(name)
        if n is None:
            lines.append("conda package %s %s is no longer installed" % (name, b["version"]))
        elif b is None:
            lines.append("conda package %s %s is installed but was not part of the environment" % (name, n["version"]))
        elif (b["version"], b["build"]) != (n["version"], n["build"]):
            lines.append(
                "conda package %s is %s (%s), the environment was built with %s (%s)"
                % (name, n["version"], n["build"], b["version"], b["build"])
            )
    before = dict((d["name"], d) for d in expected.get("distributions", []))
    now = dict((d["name"], d) for d in actual.get("distributions", []))
    for name in sorted(set(before) | set(now)):
        b, n = before.get(name), now.get(name)
        if n is None:
            lines.append("%s %s is no longer installed" % (name, b["version"]))
        elif b is None:
            lines.append("%s %s is installed but was not part of the environment" % (name, n["version"]))
        elif b["version"] != n["version"]:
            lines.append("%s is %s, the environment was built with %s" % (name, n["version"], b["version"]))
        elif n.get("missing_files"):
            lines.append("%s %s: %d of its files are gone" % (name, n["version"], n["missing_files"]))
        else:
            for key in ("record_sha256", "files", "bytes"):
                if b.get(key) != n.get(key):
                    lines.append(
                        "%s %s changed on disk (%s: %s -> %s)" % (name, n["version"], key, b.get(key), n.get(key))
                    )
                    break
    return lines


if __name__ == "__main__":
    out = interpreter_facts() if sys.argv[1:] == ["--interpreter"] else fingerprint()
    sys.stdout.write(json.dumps(out, sort_keys=True))
    sys.stdout.write("\n")
