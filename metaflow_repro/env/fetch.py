"""Getting package files from where a lock says they are, into the package cache.

Transport only: an https (or http) URL, downloaded with the TLS trust ``metaflow_repro.env.tls`` chose and tried
again when the failure may pass (a reset connection, a timeout, a 5xx); a ``file://`` URL, copied; a wheel
built from its sdist when the lock was made, built again by the hook the sdist builder gives
(``sdist.fetcher``: this module never imports the builder, which fetches through it). Whatever arrives
goes through ``PackageCache.admit``, which alone decides, by the lock's sha256 and size, what enters.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from metaflow_repro.env import tls
from metaflow_repro.env.cache import CHUNK, PackageCache
from metaflow_repro.errors import InfraError, LockFileError, OfflineMissing
from metaflow_repro.model.lock import Package
from metaflow_repro.model.validate import cap

#: how often a download is tried before its failure is the error (only failures that may pass are retried)
ATTEMPTS = 3
#: seconds before the second try; doubled before each later one
BACKOFF_SECONDS = 1.0
TIMEOUT_SECONDS = 120

#: builds ``pkg``'s wheel again from its locked sdist and admits it; returns the cached file
Rebuild = Callable[[Package, str], Path]


def _passing(exc: BaseException) -> bool:
    """Whether a failed download may succeed if tried again: not a refused certificate, a 4xx, a bad URL."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    if isinstance(exc, urllib.error.URLError):
        return not isinstance(exc.reason, ssl.SSLError)
    return isinstance(exc, (ConnectionError, TimeoutError, http.client.HTTPException))


def _whole(announced: str | None, got: int) -> None:
    """A connection closed early ends a read like the end of the file: only the length the server
    announced tells them apart (a short file would otherwise be taken for a tampered one)."""
    if announced is not None and announced.isdigit() and got < int(announced):
        raise http.client.IncompleteRead(b"", int(announced) - got)


def download(
    url: str,
    out: BinaryIO,
    where: str,
    pkg: Package,
    trust: tls.Trust | None = None,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write what ``url`` serves into ``out`` (from its start on each try): ``pkg``'s file, named in errors.
    ``trust``: for https, else ``tls.trust()``. A URL that is none is a lock error (exit 2); a failure
    that persists, or cannot pass, an infrastructure error (exit 4) naming the TLS trust used."""
    if trust is None and urlparse(url).scheme == "https":
        trust = tls.trust()
    for attempt in range(1, attempts + 1):
        out.seek(0)
        out.truncate()
        try:
            with urllib.request.urlopen(
                url, timeout=TIMEOUT_SECONDS, context=trust.ssl_context() if trust else None
            ) as resp:
                shutil.copyfileobj(resp, out, CHUNK)
                _whole(resp.headers.get("Content-Length"), out.tell())
            return
        except ValueError as exc:  # "unknown url type": the lock names no URL
            raise LockFileError(
                f"{where}: package {pkg.name} {pkg.version} has URL {url!r}, which is not a URL ({exc}); "
                "fix the lock or re-lock with `repro lock`",
                library=pkg.name,
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if attempt < attempts and _passing(exc):
                sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
                continue
            how = f"\n{trust.describe()}" if trust else ""
            tries = f" (tried {attempt} times)" if attempt > 1 else ""
            raise InfraError(f"{where}: cannot download {pkg.file} from {url}{tries}: {exc}{how}") from None


def copy(source: Path, out: BinaryIO, what: str, where: str) -> None:
    """Write the local file ``source`` into ``out`` (a ``file://`` URL, a wheel just built)."""
    try:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK)
    except OSError as exc:
        raise InfraError(f"{where}: cannot read {what} from {source}: {exc}") from None


def add_file(cache: PackageCache, pkg: Package, source: Path, where: str = "") -> Path:
    """Admit the local file ``source`` as ``pkg`` (verified against it, as every file the cache admits)."""
    return _admit(cache, pkg, lambda out: copy(source, out, pkg.file, where), where)


def _admit(cache: PackageCache, pkg: Package, write: Callable[[BinaryIO], None], where: str) -> Path:
    """``cache.admit`` for writers that take an open binary file (downloads, copies)."""

    def fill(path: Path) -> None:
        with open(path, "wb") as out:
            write(out)

    return cache.admit(pkg, fill, where)


@contextlib.contextmanager
def _progress(packages: list[Package]):
    """A rich progress bar on a terminal (bytes, rate, time left); silent otherwise."""
    if not sys.stderr.isatty():
        yield lambda pkg: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        "downloading packages",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("download", total=sum(p.size for p in packages))
        yield lambda pkg: bar.advance(task, pkg.size)


class Fetcher:
    """Fills ``cache`` with what locks name. ``rebuild``: how a wheel the lock says was built from its sdist
    is made again (None: such a package cannot be fetched here, an infrastructure error naming it)."""

    def __init__(self, cache: PackageCache, rebuild: Rebuild | None = None):
        self.cache = cache
        self.rebuild = rebuild

    def fetch(self, pkg: Package, where: str = "") -> Path:
        """``pkg``'s file in the cache: as it is there (by size; ``ensure`` checks it), else fetched and admitted."""
        if self.cache.has(pkg):
            return self.cache.path(pkg)
        if pkg.built is not None:  # on no index: built from its sdist when the lock was made
            if self.rebuild is None:
                raise InfraError(f"{where}: {pkg.file} was built from its sdist and is not in the package cache")
            return self.rebuild(pkg, where)
        parsed = urlparse(pkg.url)
        if parsed.scheme == "file":
            return add_file(self.cache, pkg, Path(unquote(parsed.path)), where)
        return _admit(self.cache, pkg, lambda out: download(pkg.url, out, where, pkg), where)

    def ensure(
        self, packages: Iterable[Package], offline: bool = False, where: str = "", jobs: int = 8
    ) -> dict[str, Path]:
        """Make every package present and verified; return {sha256: path}. ``offline``: fetch nothing, and
        say which files are missing (exit 2)."""
        packages = list(packages)
        for p in packages:
            if self.cache.has(p):
                self.cache.check(p, where)
        todo = list({p.sha256: p for p in self.cache.missing(packages)}.values())
        if todo and offline:
            raise OfflineMissing(
                f"{where}: offline, and these files are not in the package cache "
                f"{self.cache.root}: {cap(p.file for p in todo)}. Run once without --offline to download them."
            )
        if todo:
            with _progress(todo) as advance, ThreadPoolExecutor(max_workers=jobs) as pool:
                for pkg in pool.map(lambda p: (self.fetch(p, where), p)[1], todo):
                    advance(pkg)
        return {p.sha256: self.cache.path(p) for p in packages}
