"""A store in a local folder (``file:///path`` or a plain path)."""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.fsutil import DEFAULT_MODE
from metaflow_repro.paths import inside
from metaflow_repro.store.base import ObjectInfo, Store, StoreObjectMissing


class LocalStore(Store):
    def __init__(self, uri: str):
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise BadInput(
                    f"store {uri!r}: a file:// URI needs an absolute path, e.g. file:///srv/repro "
                    f"(three slashes); {parsed.netloc!r} would be read as a host name"
                )
            path = Path(unquote(parsed.path))
        else:
            path = Path(uri)
        self.root = path.expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return inside(self.root, key, f"store {self.uri}: key") if key else self.root

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def touch(self, key: str) -> None:
        try:
            os.utime(self._path(key))
        except OSError as exc:
            raise InfraError(f"store {self.uri}: cannot touch {key}: {exc}") from None

    def _atomic(self, key: str, write) -> None:
        final = self._path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=final.parent)
        except OSError as exc:
            raise InfraError(f"store {self.uri}: cannot write {key}: {exc}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.chmod(tmp, DEFAULT_MODE)
            os.replace(tmp, final)
        except OSError as exc:
            raise InfraError(f"store {self.uri}: cannot write {key}: {exc}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        with open(path, "rb") as src:
            self._atomic(key, lambda out: shutil.copyfileobj(src, out, 1 << 20))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic(key, lambda out: out.write(data))

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise StoreObjectMissing(f"store {self.uri}: missing object {key}")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def chunks(self, key: str, size: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise StoreObjectMissing(f"store {self.uri}: missing object {key}")
        with open(path, "rb") as fh:
            yield from iter(lambda: fh.read(size), b"")

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreObjectMissing(f"store {self.uri}: missing object {key}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix)
        # "runs/F/" is a folder; "runs/F" is a key prefix: it also matches runs/F@flows~a.py/...
        folder = base if (prefix.endswith("/") or not prefix) and base.is_dir() else base.parent
        if not folder.exists():
            return
        for dirpath, _, files in os.walk(folder):
            for name in files:
                if name.startswith(".partial-"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def sha256(self, key: str) -> str | None:
        h = hashlib.sha256()
        try:
            with open(self._path(key), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return h.hexdigest()

    def require_existing(self) -> None:
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise BadInput(
                f"store {self.uri} {what}; check the store URI (--store, REPRO_STORE or `store` under "
                "[tool.repro]); a store is created by the first `repro run` or `repro store push`"
            )

    def abort_stale_uploads(self, older_than: float) -> builtins.list[str]:
        """``.partial-*`` files of writers that were killed (a live writer's file is young)."""
        removed: builtins.list[str] = []
        now = time.time()
        if not self.root.is_dir():
            return removed
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(".partial-"):
                    full = Path(dirpath) / name
                    try:
                        if now - full.stat().st_mtime >= older_than:
                            full.unlink()
                            removed.append(full.relative_to(self.root).as_posix())
                    except FileNotFoundError:
                        pass
        return removed
