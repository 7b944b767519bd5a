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
FINGERPRINT_VERSION = 1


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


def _record(site, dist_info):
    path = os.path.join(dist_info, "RECORD")
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError:
        return None, 0, 0, 0
    files = size = missing = 0
    for line in blob.decode("utf-8", "replace").splitlines():
        rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        if not rel or rel.endswith(".pyc") or "__pycache__" in rel:
            continue
        try:
            size += os.stat(os.path.join(site, rel)).st_size
            files += 1
        except OSError:
            missing += 1
    return hashlib.sha256(blob).hexdigest(), files, size, missing


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


def distributions():
    result = {}
    for site in _site_dirs():
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
            record, files, size, missing = _record(site, dist_info)
            result[key] = {"name": key, "version": version, "record_sha256": record,
                           "files": files, "bytes": size, "missing_files": missing, "location": site}
    return [result[k] for k in sorted(result)]


def _libc():
    try:
        lib, ver = platform.libc_ver()
    except Exception:  # noqa: BLE001 - some platforms raise instead of returning ''
        lib, ver = "", ""
    return "%s %s" % (lib, ver) if lib else ""


def fingerprint():
    dists = distributions()
    identity = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "python": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "build": list(platform.python_build()),
        "compiler": platform.python_compiler(),
        "system": platform.system(),
        "machine": platform.machine(),
        "libc": _libc(),
        "distributions": [
            {k: d[k] for k in ("name", "version", "record_sha256", "files", "bytes", "missing_files")}
            for d in dists
        ],
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode("utf-8")
    result = dict(identity)
    result["digest"] = hashlib.sha256(blob).hexdigest()
    result["executable"] = sys.executable
    result["prefix"] = sys.prefix
    result["platform"] = platform.platform()
    result["locations"] = {d["name"]: d["location"] for d in dists}
    return result


if __name__ == "__main__":
    sys.stdout.write(json.dumps(fingerprint(), sort_keys=True))
    sys.stdout.write("\n")
