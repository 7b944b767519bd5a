"""Content-addressed package cache: ``packages/sha256/<2>/<sha256>/<file name>`` under REPRO_HOME.

A file enters the cache only after its sha256 and size match the lock, through a temporary
name and a rename, so a reader never sees a partial or unverified file. Layout matches the
store's ``packages/`` prefix, so a cache can be pushed or pulled as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

from repro.env import tls
from repro.errors import InfraError, IntegrityError, LockFileError, OfflineMissing
from repro.model.lock import Package
from repro.model.validate import cap

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


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


class PackageCache:
    def __init__(self, root: Path, uv_cache: Path | None = None):
        self.root = Path(root)
        self.uv_cache = uv_cache  # for rebuilding a wheel built from an sdist (``fetch``)

    def path(self, pkg: Package) -> Path:
        return self.root / "sha256" / pkg.sha256[:2] / pkg.sha256 / pkg.file

    def has(self, pkg: Package) -> bool:
        p = self.path(pkg)
        try:
            return p.stat().st_size == pkg.size
        except FileNotFoundError:
            return False

    def missing(self, packages) -> list[Package]:
        return [p for p in packages if not self.has(p)]

    @staticmethod
    def _stamp(path: Path) -> str:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def _stamp_file(self, pkg: Package) -> Path:
        return self.path(pkg).parent / ".verified"

    def check(self, pkg: Package, where: str = "", full: bool = False) -> Path:
        """The cached file, verified against the lock's sha256 before use.

        A full re-hash happens only when the file changed since it was admitted (size, mtime or
        inode differ from the stamp written then), so reuse stays cheap, or when ``full`` (before an
        upload; bit rot keeps the stamp). A file that fails is removed, never used, and named in the error.
        """
        path, stamp = self.path(pkg), self._stamp_file(pkg)
        try:
            if not full and stamp.read_text() == self._stamp(path):
                return path
        except OSError:
            pass
        got = sha256_file(path)
        if got != pkg.sha256:
            path.unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
            raise IntegrityError(
                f"{where}: cached package file {path} ({pkg.name} {pkg.version}) does not match its "
                f"sha256 {pkg.sha256} (got {got}); it was removed from the cache and not used. "
                "Run the command again to fetch it anew."
            )
        self._write_stamp(pkg)
        return path

    def _write_stamp(self, pkg: Package) -> None:
        stamp = self._stamp_file(pkg)
        tmp = stamp.with_name(f".verified.{os.getpid()}")
        tmp.write_text(self._stamp(self.path(pkg)))
        os.replace(tmp, stamp)

    def ensure(self, packages, offline: bool = False, where: str = "", jobs: int = 8) -> dict[str, Path]:
        """Make every package present and verified; return {sha256: path}."""
        for p in packages:
            if self.has(p):
                self.check(p, where)
        todo = {p.sha256: p for p in self.missing(packages)}.values()
        if todo and offline:
            names = cap(p.file for p in todo)
            raise OfflineMissing(
                f"{where}: offline, and these files are not in the package cache "
                f"{self.root}: {names}. Run once without --offline to download them."
            )
        if todo:
            with _progress(list(todo)) as advance, ThreadPoolExecutor(max_workers=jobs) as pool:
                for pkg in pool.map(lambda p: (self.fetch(p, where), p)[1], todo):
                    advance(pkg)
        return {p.sha256: self.path(p) for p in packages}

    def admit(self, pkg: Package, fill, where: str = "") -> Path:
        """Let ``fill(path)`` write the file (e.g. a download from a store) straight into the cache
        under a temporary name; it is hashed once and renamed into place only if it verifies."""
        final = self.path(pkg)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=final.parent)
        os.close(fd)
        try:
            fill(Path(tmp))
            return self._verify_and_place(pkg, Path(tmp), where)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _verify_and_place(self, pkg: Package, tmp: Path, where: str) -> Path:
        got_size, got = tmp.stat().st_size, sha256_file(tmp)
        if got != pkg.sha256 or got_size != pkg.size:
            detail = (
                f"package file {pkg.file} ({pkg.name} {pkg.version}) does not match the lock: "
                f"sha256 {got} (size {got_size}), lock says {pkg.sha256} (size {pkg.size}). The file was not "
                f"used. If the index really republished it, re-lock; otherwise the source ({pkg.url}) is "
                "corrupt or tampered with."
            )
            raise IntegrityError(f"{where}: {detail}", detail=detail, library=pkg.name, path=pkg.file)
        os.chmod(tmp, 0o444)
        final = self.path(pkg)
        os.replace(tmp, final)
        self._write_stamp(pkg)
        return final

    def add_file(self, pkg: Package, source: Path, where: str = "") -> Path:
        """Verify a local file against ``pkg`` and copy it in (used for file:// URLs and stores)."""

        def copy(out):
            try:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, CHUNK)
            except OSError as exc:
                raise InfraError(f"{where}: cannot read {pkg.file} from {source}: {exc}") from None

        return self._admit(pkg, copy, where)

    def fetch(self, pkg: Package, where: str = "") -> Path:
        if self.has(pkg):
            return self.path(pkg)
        if pkg.built is not None:  # on no index: built from its sdist when the lock was made
            from repro.env.sdist import rebuild

            return rebuild(self, pkg, where)
        parsed = urlparse(pkg.url)
        if parsed.scheme == "file":
            return self.add_file(pkg, Path(unquote(parsed.path)), where)

        trust = tls.trust() if parsed.scheme == "https" else None

        def download(out):
            try:
                context = trust.ssl_context() if trust else None
                with urllib.request.urlopen(pkg.url, timeout=120, context=context) as resp:
                    shutil.copyfileobj(resp, out, CHUNK)
            except ValueError as exc:  # "unknown url type": the lock names no URL
                raise LockFileError(
                    f"{where}: package {pkg.name} {pkg.version} has URL {pkg.url!r}, which is not "
                    f"a URL ({exc}); fix the lock or re-lock with `repro lock`",
                    library=pkg.name,
                ) from None
            except (urllib.error.URLError, OSError) as exc:
                how = f"\n{trust.describe()}" if trust else ""
                raise InfraError(f"{where}: cannot download {pkg.file} from {pkg.url}: {exc}{how}") from None

        return self._admit(pkg, download, where)

    def _admit(self, pkg: Package, write, where: str) -> Path:
        """``admit`` for writers that take an open binary file (downloads, copies)."""

        def fill(path: Path):
            with open(path, "wb") as out:
                write(out)

        return self.admit(pkg, fill, where)

    def verify(self, pkg: Package) -> bool:
        """Re-hash a cached file (slow path, used before installing files we did not just write)."""
        return self.has(pkg) and sha256_file(self.path(pkg)) == pkg.sha256

    def verify_all(self) -> tuple[list[Path], int]:
        """Re-hash every file in the cache against the sha256 it is filed under; remove those that
        do not match (bit rot, a hand edit) and the leftovers of killed downloads older than an hour.
        Returns (removed damaged files, number of files checked)."""
        bad, checked = [], 0
        for folder in sorted(self.root.glob("sha256/*/*")):
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    continue
                checked += 1
                if sha256_file(path) != folder.name:
                    path.unlink(missing_ok=True)
                    (folder / ".verified").unlink(missing_ok=True)
                    bad.append(path)
        self.clean_partials()
        return bad, checked

    def clean_partials(self, older_than: float = 3600.0) -> int:
        """Remove ``.partial-*`` files of downloads that were killed (a live one is younger)."""
        now, n = time.time(), 0
        for path in self.root.glob("sha256/*/*/.partial-*"):
            try:
                if now - path.stat().st_mtime >= older_than:
                    path.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n
