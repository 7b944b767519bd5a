"""Which certificates the package index's TLS is checked against (uv and our own downloads).

Behind a TLS-intercepting proxy pip works because it reads its ``cert`` setting; uv does not. So the
trust is decided here, once, in this order, and given to both uv (``SSL_CERT_FILE``, plus
``UV_NATIVE_TLS`` so the system's trust store counts) and the downloader (an ``ssl`` context):

1. ``SSL_CERT_FILE``;
2. ``REQUESTS_CA_BUNDLE``;
3. pip's ``cert``: ``PIP_CERT``, else the ``cert`` key of pip's configuration files, read as pip
   does (global, user, site, then ``PIP_CONFIG_FILE``; ``[install]`` over ``[global]``);
4. else the system's trust store.

Errors that reach the index name the one that was used (``Trust.describe``).
"""

from __future__ import annotations

import configparser
import os
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.errors import BadInput
from metaflow_repro.settings import BY_NAME

#: The settings read, in order (their variables are named in ``metaflow_repro.settings``).
ORDER = ("ssl_cert_file", "requests_ca_bundle", "pip_cert")


@dataclass(frozen=True)
class Trust:
    """``cafile``: a PEM bundle to trust, or None for the system's trust store; ``source``: where it
    came from (a variable's name, or a pip configuration file and key)."""

    source: str
    cafile: str | None = None

    def describe(self) -> str:
        if self.cafile is None:
            names = ", ".join(BY_NAME[n].env or n for n in ORDER)
            return f"TLS trust: the system's trust store (none of {names} or pip's `cert` is set)"
        return f"TLS trust: CA bundle {self.cafile} (from {self.source})"

    def uv_env(self) -> dict[str, str]:
        env = {"UV_NATIVE_TLS": "1"}
        if self.cafile is not None:
            env["SSL_CERT_FILE"] = self.cafile
        return env

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files on this machine, lowest precedence first (pip's own order)."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:  # pip: "no configuration files are loaded"
        return []
    home = Path(environ.get("HOME") or Path.home())
    xdg_dirs = [d for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep) if d]
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs] + [Path("/etc/pip.conf")]
    if not (env_file and Path(env_file).exists()):  # pip skips the user's files when PIP_CONFIG_FILE exists
        files += [
            home / ".pip" / "pip.conf",
            Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf",
        ]
    files.append(Path(environ.get("VIRTUAL_ENV") or sys.prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def pip_cert(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(path, where it was set) of pip's ``cert``, or None."""
    if text := environ.get(BY_NAME["pip_cert"].env or ""):
        return text, BY_NAME["pip_cert"].env or ""
    found = None
    for file in pip_config_files(environ):
        parser = configparser.RawConfigParser()
        try:
            parser.read(file, encoding="utf-8")
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue  # pip would refuse it too; it is not ours to judge here
        for section in ("global", "install"):
            if parser.has_option(section, "cert") and parser.get(section, "cert").strip():
                found = (parser.get(section, "cert").strip(), f"pip configuration {file} [{section}] cert")
    return found


def trust(environ: Mapping[str, str] | None = None) -> Trust:
    """The trust every connection to a package index uses. A named bundle that is not a file is
    bad input (exit 2), naming where it was set."""
    environ = os.environ if environ is None else environ
    chosen: tuple[str, str] | None = None
    for name in ORDER[:2]:
        var = BY_NAME[name].env or ""
        if text := environ.get(var):
            chosen = (text, var)
            break
    chosen = chosen or pip_cert(environ)
    if chosen is None:
        return Trust("system")
    path, source = chosen
    full = Path(path).expanduser()
    if not full.is_file():
        raise BadInput(
            f"{source} names the CA bundle {path}, which is not a file; point it at the PEM bundle your "
            "proxy's certificate is signed by (or unset it to use the system's trust store)",
            path=path,
        )
    return Trust(source, str(full.resolve()))
