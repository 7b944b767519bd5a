"""Content-addressed package cache: ``packages/sha256/<2>/<sha256>/<file name>`` under REPRO_HOME.

A file enters the cache only after its sha256 and size match the lock, through a temporary
name and a rename, so a reader never sees a partial or unverified file. Layout matches the
store's ``packages/`` prefix, so a cache can be pushed or pulled as is.

The cache only admits and verifies: what brings a file (a download, a copy, a store, an sdist
build) is its caller's (``metaflow_repro.env.fetch``, ``metaflow_repro.store.snapshot``), through ``admit``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from metaflow_repro.errors import IntegrityError
from metaflow_repro.model.lock import Package
from metaflow_repro.paths import usable_home

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class PackageCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, pkg: Package) -> Path:
        return self.root / "sha256" / pkg.sha256[:2] / pkg.sha256 / pkg.file

    def has(self, pkg: Package) -> bool:
        p = self.path(pkg)
        try:
            return p.stat().st_size == pkg.size
        except FileNotFoundError:
            return False

    def missing(self, packages: Iterable[Package]) -> list[Package]:
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

    def admit(self, pkg: Package, fill: Callable[[Path], object], where: str = "") -> Path:
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


def ready_home(settings) -> Path:
    """``REPRO_HOME`` checked usable (``paths.usable_home``: one clear message for a file or a read-only
    folder) and rid of the partial downloads killed runs left in the package cache."""
    home = usable_home(settings)
    PackageCache(settings.home.packages).clean_partials()
    return home
