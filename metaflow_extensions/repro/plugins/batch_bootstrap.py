"""Inside a Batch container, before the task: make the step's environment from the S3 store alone.

Run as a script by the image's own ``python3`` (standard library + boto3, which the image has): the
host stages it in the store (``tools/bootstrap/<sha256>/batch_bootstrap.py``) and the job's command
carries only ``batch_fetch.py``, which fetches it, checks its sha256 and runs it::

    python3 batch_bootstrap.py s3://bucket/prefix <sha256 of the bootstrap manifest>

The manifest (``bootstrap/<sha256>.json``, written by the host before it submits the job) names
every object the environment needs, each by key and sha256: the interpreter snapshot (a tarball of
its install prefix), uv, and the env's package files. Every object is verified before use; a
mismatch stops the job naming the object. The interpreter is restored at its recorded prefix, the
env is built offline (``uv pip install --offline --no-index --require-hashes``) at the path it has
on the host, and the host's marker (env id + the fingerprint taken after the host's build) is
written last, so the task-side check (task_check.py) proves this env equals the host's, which
equals the lock. Standard library and boto3 only, Python 3.7 syntax.

The instance cache (``batch_bootstrap.py s3://... <manifest sha256> <cache folder>``; the host's
``batch-cache`` setting, a folder of the Batch instance that every job mounts at the same path) keeps
what one job made for the next jobs of the same instance: the manifest and this script (by sha256),
each interpreter restored from a verified snapshot (``pythons/<sha256>/<n>/prefix``) and each env built
offline from verified files (``envs/<key>/<n>/env``, ``key`` naming everything the env is made from).
Any job of the instance can write there, so nothing found there is trusted: a cached tree is used only
if it holds exactly the files and links the manifest lists (``check_tree``: every file's sha256, as the
host computed it from the snapshot it packed and the env it built; nothing missing, nothing added),
else the job warns naming the first difference and makes a new generation ``<n+1>`` (the old one is
left to the jobs that may still run from it). Each generation is made in a private folder, checked,
and renamed into place whole. Tasks write no bytecode there (``PYTHONDONTWRITEBYTECODE``).
"""

import hashlib
import json
import os
import queue
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

EXIT_INTEGRITY = 3
WORK = "/tmp/repro-bootstrap"
#: the store key of a bootstrap manifest: ``protocol.BOOTSTRAP_MANIFEST_KEY``, copied because this script
#: runs alone in the job (fetched by sha256, with nothing of repro beside it); a unit test holds the two equal
MANIFEST_KEY = "bootstrap/%s.json"


class Failed(Exception):
    pass


class Refused(Failed):
    """An interpreter tarball that is not the recorded bytes, or whose members would leave its prefix:
    nothing of it was kept."""


#: bits a restored file never keeps (as tarfile's "data" filter): setuid, setgid, sticky, group/other write
_DROPPED_MODE = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH
_CHUNK = 1 << 20
#: an interpreter tarball never inflates to more than this (a 3.11 prefix is ~200 MB): a gzip bomb in the
#: store is refused after this many bytes, before it fills the memory or disk of the job
MAX_INFLATED = 2 << 30
#: the instance cache's layout (part of every env key)
CACHE_FORMAT = 2


def member_problem(member):
    """Why a tar member may not be part of an interpreter snapshot ("" if it may): it must be a file,
    a folder or a symbolic link, named inside the prefix, a link pointing inside it."""
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        return "member %r leaves the install prefix" % name
    if member.issym():
        target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            return "link %r -> %r leaves the install prefix" % (name, member.linkname)
    elif not (member.isfile() or member.isdir()):
        return "member %r is not a file, folder or link" % name
    return ""


class _Raw(object):
    """zlib's decompressor interface for bytes that are not compressed: at most ``max_length`` at a time."""

    eof = True
    unused_data = b""

    def __init__(self):
        self.unconsumed_tail = b""

    def decompress(self, data, max_length):
        self.unconsumed_tail = data[max_length:]
        return data[:max_length]

    def flush(self):
        return b""


class _Tee(object):
    """The decompressed tar stream, read by tarfile (to check every member) while the same bytes go to
    GNU tar's standard input (to extract them, from a thread of their own, so that inflating here and
    extracting there overlap); the compressed bytes are hashed on the way."""

    def __init__(self, chunks, sink, max_inflated=MAX_INFLATED, raw=False):
        self.chunks = iter(chunks)
        self.sink = sink
        self.max_inflated = max_inflated
        self.inflated = 0
        self.digest = hashlib.sha256()
        # gzip; or (raw) the chunks are the tar itself, inflated by the caller (a zstd snapshot, on the host)
        self.inflate = _Raw() if raw else zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.buffer = b""
        self.pos = 0
        self.eof = False
        self.error = ""
        self.pending = queue.Queue(maxsize=8)
        self.writer = threading.Thread(target=self._write)
        self.writer.daemon = True
        self.writer.start()

    def _write(self):
        broken = False
        while True:
            data = self.pending.get()
            if data is None:
                break
            if not broken:
                try:
                    self.sink.write(data)
                except OSError:  # tar stopped (a broken pipe): its exit status says why
                    broken = True
        try:
            self.sink.close()
        except OSError:
            pass

    def close(self):
        """No more bytes for tar (its standard input is closed once it has all the rest)."""
        self.pending.put(None)
        self.writer.join()

    def _more(self):
        """The next at most ``_CHUNK`` inflated bytes (the compressed input a bounded ``decompress``
        left over first, then the next chunk): never more than that in memory, whatever the ratio."""
        tail = b"" if self.error else self.inflate.unconsumed_tail
        chunk = tail or next(self.chunks, None)
        if chunk is None:
            self.eof = True
        elif not tail:
            self.digest.update(chunk)
        if self.error:  # not gzip, or too big: only hashed from here on (the digest names the bytes)
            return b""
        try:
            data = self.inflate.flush() if chunk is None else self.inflate.decompress(chunk, _CHUNK)
        except zlib.error as exc:
            self.error = "not gzip data (%s)" % exc
            return b""
        self.inflated += len(data)
        if self.inflated > self.max_inflated:
            self.error = "it inflates to more than %d bytes, more than any interpreter (a gzip bomb?)" % (
                self.max_inflated
            )
            return b""
        if data:
            self.pending.put(data)
        return data

    def read(self, size=-1):
        if size < 0:
            size = 1 << 62
        while not self.eof and len(self.buffer) - self.pos < size:
            more = self._more()
            if more:
                self.buffer = self.buffer[self.pos :] + more
                self.pos = 0
        out = self.buffer[self.pos : self.pos + size]
        self.pos += len(out)
        return out

    def drain(self):
        """Hash (and pass on) whatever tarfile did not need to read (end-of-archive padding)."""
        while not self.eof:
            self._more()
        self.buffer, self.pos = b"", 0

    def problem(self):
        """Why the whole stream is not one complete gzip member ("" if it is), once drained: zlib checks
        the trailer's CRC and length only when it reaches them, so a stream cut before its trailer (or
        with bytes after it) is refused here, whatever tarfile made of the tar inside."""
        if self.error:
            return self.error
        if not self.inflate.eof:
            return "the gzip stream is cut short (its end and CRC are missing)"
        if self.inflate.unused_data:
            return "bytes follow the end of the gzip stream"
        return ""


def _escapes(staging):
    """The first entry of the extracted tree that is not a plain file, folder or link resolving inside
    it, or a hard link (a snapshot packs hard links as files) ("" if none); special mode bits dropped."""
    root = os.path.realpath(staging)
    for folder, dirs, files in os.walk(staging):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(path)
                if real != root and not real.startswith(root + os.sep):
                    return "link %r -> %r leaves the install prefix" % (
                        os.path.relpath(path, staging),
                        os.readlink(path),
                    )
            elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                return "member %r is not a file, folder or link (a hard link)" % os.path.relpath(path, staging)
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                return "member %r is not a file, folder or link" % os.path.relpath(path, staging)
            elif st.st_mode & _DROPPED_MODE:
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~_DROPPED_MODE)
    return ""


def _force_writable(func, path, _exc):
    """``shutil.rmtree``'s error handler: give the owner rwx on the entry and the folder holding it
    (an extracted tree may have read-only folders, which only root can empty as they are) and try once
    more; what still fails is left (best effort: the caller is already failing)."""
    for p in (os.path.dirname(path), path):
        try:
            if not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | stat.S_IRWXU)
        except OSError:
            pass
    try:
        if func in (os.rmdir, os.unlink, os.remove):
            func(path)
        elif os.path.isdir(path) and not os.path.islink(path):  # could not be listed: now it can
            remove_tree(path)
    except OSError:
        pass


def remove_tree(path):
    """Remove the folder ``path`` and all in it, read-only folders included (as a non-root user)."""
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_force_writable)
    else:
        shutil.rmtree(path, onerror=_force_writable)


def unpack_interpreter(chunks, sha256, prefix, what, max_inflated=MAX_INFLATED, check=None, raw=False):
    """Extract the interpreter tarball (gzip'd tar) whose bytes ``chunks`` yields at ``prefix``, which must
    not exist. One pass: the bytes are hashed and inflated here, every member is checked (``member_problem``)
    while GNU tar (C: a standard library is thousands of small files) extracts the same stream into a
    staging folder beside ``prefix``. The staging folder is renamed into place only if the sha256 is
    ``sha256``, no member was refused, tar succeeded and no link in the extracted tree resolves outside
    it, and ``check(staging)`` (if given: the host proves the interpreter's fingerprint there, before
    anything is at ``prefix``) returns ""; otherwise it is removed (with the folders this call created
    above it) and ``Refused`` names ``what``. GNU tar itself never writes outside its folder (it strips a leading "/", skips ".." members
    and defers links that point up); the stream never inflates past ``max_inflated`` bytes.

    Returns True, or False when another process put a folder at ``prefix`` meanwhile (two restores of
    the same snapshot at once): this one's copy is then removed, and the caller must prove what is
    there (its fingerprint) before using it.

    ``raw``: ``chunks`` are the tar itself, inflated by the caller (repro on the host, from a zstd
    snapshot), and ``sha256`` is None: the caller's ``check`` proves the compressed bytes' digest."""
    parent = os.path.dirname(prefix)
    created = _make_parents(parent)
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix="." + os.path.basename(prefix) + ".restore-", dir=parent)
        os.chmod(staging, 0o755)
        got, problem, code, err = _extract_stream(chunks, staging, max_inflated, raw)
        if sha256 is not None and got != sha256:
            raise Refused("%s has sha256 %s, the record says %s; nothing was extracted" % (what, got, sha256))
        if problem:
            raise Refused("%s: %s; nothing was extracted" % (what, problem))
        if code != 0:
            raise Refused("%s: not a usable interpreter tarball (tar exit %d: %s)" % (what, code, err.strip()[-500:]))
        problem = _escapes(staging) or (check(staging) if check is not None else "")
        if problem:
            raise Refused("%s: %s; nothing was extracted" % (what, problem))
        return _place(staging, prefix)
    except BaseException:
        if staging is not None:
            remove_tree(staging)
        for folder in created:  # deepest first: only those this call made, and only if still empty
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise


def _make_parents(parent):
    """Create ``parent`` if missing; the folders this call created, deepest first."""
    created = _missing_parents(parent)
    if created:
        try:
            os.makedirs(parent)
        except OSError:
            if not os.path.isdir(parent):  # another restore may have made it meanwhile
                raise
    return created


def _extract_stream(chunks, staging, max_inflated, raw=False):
    """GNU tar extracts the gzip'd tar ``chunks`` yields into ``staging`` while the same bytes are hashed,
    inflated (at most ``max_inflated``) and every member checked here. Returns (sha256 of the bytes, the
    first problem or "", tar's exit code, tar's stderr)."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: tar never blocks on its warnings
        tar = subprocess.Popen(
            ["tar", "-x", "--no-same-owner", "-C", staging, "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        tee = _Tee(chunks, tar.stdin, max_inflated, raw)
        problem = ""
        try:
            try:
                with tarfile.open(fileobj=tee, mode="r|", bufsize=_CHUNK) as members:
                    for member in members:
                        problem = problem or member_problem(member)
            except (tarfile.TarError, EOFError) as exc:
                problem = "not a usable interpreter tarball (%s)" % (tee.error or exc)
            tee.drain()
            if not problem and tee.problem():
                problem = "not a usable interpreter tarball (%s)" % tee.problem()
        finally:
            tee.close()
            code = tar.wait()
            errors.seek(0)
            err = errors.read().decode("utf-8", "replace")
    return tee.digest.hexdigest(), problem, code, err


def _place(staging, prefix):
    """Rename the proven ``staging`` folder to ``prefix``: True, or False when another process restored
    this prefix meanwhile (this copy is removed; theirs is kept)."""
    try:
        os.rename(staging, prefix)
    except OSError:
        if not os.path.isdir(prefix):
            raise
        remove_tree(staging)
        return False
    return True


def _missing_parents(folder):
    """The folders ``makedirs(folder)`` would create, deepest first."""
    missing = []
    folder = os.path.abspath(folder)
    while not os.path.isdir(folder):
        missing.append(folder)
        up = os.path.dirname(folder)
        if up == folder:
            break
        folder = up
    return missing


def _client():
    import boto3

    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


def _split(uri):
    if not uri.startswith("s3://"):
        raise Failed("the store %r is not an s3:// store" % uri)
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def network_errors():
    """What a failing store (or the way to it) raises: botocore's errors (ClientError, connection and
    read timeouts, a response stream that broke), urllib3's, the socket's. Nothing else is reported as
    "cannot fetch": a missing tar, a full disk or a bug says what it is."""
    errors = [ConnectionError, socket.timeout]
    try:
        import botocore.exceptions

        errors += [botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError]
    except ImportError:
        pass
    try:
        import urllib3.exceptions

        errors.append(urllib3.exceptions.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


class _StreamBroken(Exception):
    """The store's stream failed while it was being unpacked (``network_errors``): tried again once."""

    def __init__(self, error):
        Exception.__init__(self, str(error))
        self.error = error


def _guarded(chunks, errors):
    """``chunks``, with a network error raised as ``_StreamBroken`` (told apart from extraction's own)."""
    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except errors as exc:
            raise _StreamBroken(exc) from None
        yield chunk


def _fetch(s3, key, sha256, dest):
    """Download ``key`` to ``dest`` and verify its sha256 (a mismatch names the object)."""
    tmp = dest + ".part"
    try:
        s3.client().download_file(s3.bucket, s3.full(key), tmp)  # boto3 retries a broken transfer itself
    except network_errors() as exc:
        raise Failed("cannot fetch store object %s from s3://%s: %s" % (key, s3.bucket, exc)) from None
    h = hashlib.sha256()
    with open(tmp, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != sha256:
        os.unlink(tmp)
        raise Failed(
            "store object %s (%s) does not match its sha256: expected %s, got %s; "
            "it was not used. Push the run again from a machine with intact files."
            % (key, s3.uri(key), sha256, h.hexdigest())
        )
    os.rename(tmp, dest)
    return dest


def _stream_restore(s3, snap, dest):
    """Unpack the interpreter snapshot at ``dest``, streamed from the store (hashed, inflated and
    extracted while it downloads; kept only if its sha256 matches); True unless another process put a
    folder at ``dest`` meanwhile (``unpack_interpreter``)."""
    key = snap["key"]
    what = "store object %s (%s)" % (key, s3.uri(key))
    errors = network_errors()
    for attempt in (1, 2):  # a stream that broke midway is fetched once more (nothing of it was kept)
        body = None
        try:
            body = s3.client().get_object(Bucket=s3.bucket, Key=s3.full(key))["Body"]
            return unpack_interpreter(_guarded(body.iter_chunks(_CHUNK), errors), snap["sha256"], dest, what)
        except errors + (_StreamBroken,) as exc:
            if attempt == 2:
                raise Failed("cannot fetch store object %s from s3://%s: %s" % (key, s3.bucket, exc)) from None
            sys.stderr.write("repro bootstrap: fetching %s failed (%s); trying once more\n" % (key, exc))
        except OSError as exc:  # tar missing, a full disk, a prefix that cannot be made: what it is
            raise Failed("%s: cannot restore the interpreter at %s: %s" % (what, dest, exc)) from None
        finally:
            if body is not None:
                body.close()
    return False  # not reached


def _restore_interpreter(s3, snap, cache=""):
    """The interpreter the manifest names, at its recorded prefix: there already (the image's), or linked
    to the instance cache's verified copy (restored there first when it has none that checks), or else
    restored at the prefix itself."""
    exe = os.path.join(snap["prefix"], snap["executable"])
    if os.path.exists(exe):
        return exe
    if cache and _linkable(snap["prefix"]):
        if not re.match(r"^[0-9a-f]{64}$", snap["sha256"]):
            raise Failed("the manifest names the interpreter snapshot %r, not a sha256" % snap["sha256"])
        try:
            tree = cached_tree(
                os.path.join(cache, "pythons", snap["sha256"]),
                "prefix",
                snap["files"],
                lambda dest: _stream_restore(s3, snap, dest),
                "the interpreter %s" % snap["sha256"][:12],
            )
            link(snap["prefix"], tree)
            return exe
        except _NotCached:
            pass
    if not _stream_restore(s3, snap, snap["prefix"]) and not os.path.exists(exe):
        # another job's restore put a folder there first, without this interpreter
        raise Failed(
            "store object %s (%s): %s appeared while it was being restored, without %s; it was left alone"
            % (snap["key"], s3.uri(snap["key"]), snap["prefix"], snap["executable"])
        )
    return exe


# -- the instance cache ------------------------------------------------------------------------------


#: what the manifest lists for each entry of a tree (``{relative path: [kind, value]}``): a folder,
#: a file and its sha256, a link and its target, a RECORD file and its sha256 without the installer's cache
#: lines (``record_digest``: uv's uv_cache.json differs from one install to the next), a file whose bytes
#: are not compared (that cache file, the env marker: checked on its own)
FILE, LINK, RECORD, ANY, DIR = "f", "l", "r", "a", "d"
#: what a RECORD file lists that is about the installer's cache (as probe.INSTALLER_CACHE_FILES)
INSTALLER_CACHE_FILES = ("uv_cache.json",)


def record_digest(blob):
    """sha256 of a RECORD file's lines but those of installer cache files (probe._record's rule, repeated
    here: this script runs on its own)."""
    kept = []
    for line in blob.decode("utf-8", "replace").splitlines():
        folder, _, name = line.rsplit(",", 2)[0].partition("/")
        if not (name in INSTALLER_CACHE_FILES and folder.endswith(".dist-info")):
            kept.append(line)
    return hashlib.sha256("\n".join(kept).encode("utf-8")).hexdigest()


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _scan(root):
    """Every entry under ``root`` (links not followed): its path relative to ``root`` -> (path, lstat)."""
    found = {}
    start = len(root) + 1
    stack = [root]
    while stack:
        for entry in os.scandir(stack.pop()):
            st = entry.stat(follow_symlinks=False)
            found[entry.path[start:]] = (entry.path, st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return found


def _listing_difference(found, expected):
    """The first path added (in path order), else the first missing, else ""."""
    added = sorted(rel for rel in found if rel not in expected)
    if added:
        return "%s was added" % added[0]
    missing = sorted(rel for rel in expected if rel not in found)
    return "%s is missing" % missing[0] if missing else ""


def _entry_problem(rel, path, st, kind, value):
    """What is wrong with one entry short of its bytes, else "": a folder for a folder, the same link,
    a plain file with one name and no setuid or setgid bit (its bytes can change from outside the tree
    otherwise, or it runs as someone else)."""
    mode = st.st_mode
    if kind == DIR or stat.S_ISDIR(mode):
        if kind == DIR and stat.S_ISDIR(mode):
            return ""
        return "%s is not the %s it was" % (rel, "folder" if kind == DIR else "file or link")
    if kind == LINK:
        return "" if stat.S_ISLNK(mode) and os.readlink(path) == value else "%s is not the link it was" % rel
    plain = stat.S_ISREG(mode) and st.st_nlink <= 1 and not mode & (stat.S_ISUID | stat.S_ISGID)
    return "" if plain and kind in (FILE, RECORD, ANY) else "%s is not the file it was" % rel


def _same_bytes(item):
    """(rel, whether the file's digest is the one listed): a RECORD file's without the installer's cache lines."""
    rel, path, kind, value = item
    if kind == RECORD:
        with open(path, "rb") as fh:
            got = record_digest(fh.read())
    else:
        got = _file_sha256(path)
    return rel, got == value


def check_tree(root, expected):
    """ "" when the tree at ``root`` holds exactly the folders, files and links ``expected`` lists, with those
    bytes and targets, every file a plain one with one name and no setuid or setgid bit (files hashed on
    threads: sha256 releases the GIL); else the first difference, in words."""
    found = _scan(root)
    listing = _listing_difference(found, expected)
    if listing:
        return listing
    problems = {}
    to_hash = []
    for rel, (path, st) in found.items():
        kind, value = expected[rel]
        problem = _entry_problem(rel, path, st, kind, value)
        if problem:
            problems[rel] = problem
        elif kind in (FILE, RECORD):  # a folder, a link and ANY have nothing more to compare
            to_hash.append((rel, path, kind, value))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for rel, same in pool.map(_same_bytes, to_hash):
            if not same:
                problems[rel] = "%s changed" % rel
    return problems[sorted(problems)[0]] if problems else ""


class _NotCached(Exception):
    """The instance cache cannot give a verified tree (it cannot be written, or what was made there is not
    what the manifest lists): the job makes a private copy."""


def _generations(root):
    """The generation numbers under ``root``, newest first (other names are not generations)."""
    if not os.path.isdir(root):
        return []
    return sorted((int(n) for n in os.listdir(root) if re.match(r"^[0-9]{1,9}$", n)), reverse=True)


def cached_tree(root, name, expected, make, what):
    """The tree ``root/<n>/name`` of the newest generation ``n`` when it is exactly ``expected`` (its real
    path: what was checked is what the caller links to); else a new generation made by ``make(folder)`` in
    a private folder, checked, and renamed into place as the next number free (or another job's newer one,
    if it checks). Raises ``_NotCached`` (with a warning already written) when there is none to use: the
    caller then makes a private copy, which says what is wrong if ``make`` failed for a reason of its own."""
    try:
        generations = _generations(root)
        if generations:
            tree = os.path.realpath(os.path.join(root, str(generations[0]), name))
            problem = check_tree(tree, expected)
            if not problem:
                return tree
            _warn("%s in the instance cache (%s): %s; making it again" % (what, tree, problem))
        staging = _staging(root, ".make")
        try:
            try:
                make(os.path.join(staging, name))
            except Failed as exc:
                raise _NotCached("%s could not be made in the instance cache (%s)" % (what, exc)) from None
            problem = check_tree(os.path.join(staging, name), expected)
            if problem:
                raise _NotCached("%s made in the instance cache is not what the manifest lists: %s" % (what, problem))
            for _ in range(3):
                dest = os.path.join(root, str((generations or [0])[0] + 1))
                try:
                    os.rename(staging, dest)
                    staging = None
                    return os.path.realpath(os.path.join(dest, name))
                except OSError:
                    if not os.path.isdir(dest):
                        raise
                tree = os.path.realpath(os.path.join(dest, name))  # another job placed it first: used if it checks
                if not check_tree(tree, expected):
                    return tree
                generations = _generations(root)
            raise _NotCached("%s: other jobs keep placing generations that do not check in %s" % (what, root))
        finally:
            if staging is not None:
                remove_tree(staging)
    except _NotCached as exc:
        _warn("%s; making a private copy" % exc)
        raise
    except OSError as exc:  # a cache folder that cannot be written or read: as if there were none
        _warn("the instance cache %s cannot be used for %s (%s); making a private copy" % (root, what, exc))
        raise _NotCached(str(exc)) from None


#: a private folder of the instance cache older than this is left over by a job that was killed
STALE_SECONDS = 7 * 24 * 3600


def _staging(parent, name):
    """A new private folder ``parent/.name.*``, after removing those a killed job left there long ago."""
    if not os.path.isdir(parent):
        try:
            os.makedirs(parent)
        except OSError:
            if not os.path.isdir(parent):
                raise
    now = time.time()
    for old in os.listdir(parent):
        path = os.path.join(parent, old)
        try:
            if old.startswith("." + name + ".") and now - os.lstat(path).st_mtime > STALE_SECONDS:
                remove_tree(path)
        except OSError:
            pass
    staging = tempfile.mkdtemp(prefix=".%s." % name, dir=parent)
    os.chmod(staging, 0o755)  # jobs of other users read what is placed from it
    return staging


def _linkable(path):
    """Whether ``path`` may become a link to a cached tree: nothing is there, or a link (an image's own
    folder there, e.g. /usr/local, is never replaced: the private copy then says what is in the way)."""
    return os.path.islink(path) or not os.path.lexists(path)


def link(path, target):
    """Make ``path`` (which must not be a folder) a symbolic link to ``target``, atomically."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    tmp = "%s.repro-link-%d" % (path, os.getpid())
    os.symlink(target, tmp)
    os.rename(tmp, path)


def env_key(manifest):
    """What names a cached env: everything it is made from and must hold (uv, the interpreter snapshot, its
    prefix and the name the venv is made from, each package file and its URL, the env's path, marker and
    the files the host listed), not the bootstrap script."""
    doc = {
        "format": CACHE_FORMAT,
        "env_id": manifest["env_id"],
        "env_path": manifest["env_path"],
        "interpreter": [manifest["interpreter"][k] for k in ("sha256", "prefix", "executable")],
        "uv": manifest["uv"]["sha256"],
        "packages": [[p["name"], p["url"], p["sha256"]] for p in manifest["packages"]],
        "marker": manifest["marker"],
        "venv_python": manifest.get("venv_python"),
        "files": manifest.get("files"),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


def _warn(message):
    sys.stderr.write("repro bootstrap: warning: %s\n" % message)


def _cached_blob(cache, folder, name, sha256):
    if not cache:
        return None
    try:
        with open(os.path.join(cache, folder, name), "rb") as fh:
            data = fh.read()
    except (OSError, IOError):
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _keep_blob(cache, folder, name, data):
    """Best effort: a cache that cannot be written only means the next job fetches again."""
    if not cache:
        return
    try:
        parent = os.path.join(cache, folder)
        if not os.path.isdir(parent):
            os.makedirs(parent)
        fd, tmp = tempfile.mkstemp(prefix="." + name + ".", dir=parent)  # unique across containers
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.rename(tmp, os.path.join(parent, name))
    except (OSError, IOError):
        pass


class _Store(object):
    """The S3 store, its client made on first use (a job that finds everything in the instance cache
    never imports boto3)."""

    def __init__(self, uri):
        self.bucket, self.prefix = _split(uri)
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = _client()
            return self._client

    def full(self, key):
        return self.prefix + "/" + key if self.prefix else key

    def uri(self, key):
        return "s3://%s/%s" % (self.bucket, self.full(key))


def _manifest(s3, sha256, cache):
    """The bootstrap manifest: from the instance cache when its bytes there are the ones ``sha256``
    names, else from the store (verified, then kept in the cache)."""
    name = "%s.json" % sha256
    data = _cached_blob(cache, "manifests", name, sha256)
    if data is None:
        path = _fetch(s3, MANIFEST_KEY % sha256, sha256, os.path.join(WORK, "manifest.json"))
        with open(path, "rb") as fh:
            data = fh.read()
        _keep_blob(cache, "manifests", name, data)
    return json.loads(data.decode("utf-8"))


def main(argv):
    store, manifest_sha = argv[1], argv[2]
    cache = argv[3] if len(argv) > 3 else ""
    started = time.time()
    if not os.path.isdir(WORK):
        os.makedirs(WORK)
    s3 = _Store(store)
    manifest = _manifest(s3, manifest_sha, cache)
    listed = time.time()
    env_path = manifest["env_path"]
    env_id = manifest["marker"].get("env_id", "?")[:12]
    marker_path = os.path.join(env_path, manifest["marker_name"])
    if os.path.exists(marker_path):
        return 0
    fetched = {}

    def fetch():
        """uv and the package files (the interpreter alongside): once, for the first build that needs them."""
        if fetched:
            return fetched["python"]
        jobs = [(manifest["uv"]["key"], manifest["uv"]["sha256"], os.path.join(WORK, "uv"))]
        for p in manifest["packages"]:
            # at the host's cache path: uv records the file's URL in the env (direct_url.json), so the
            # same path gives the same RECORD files, and so the fingerprint the host took
            if not os.path.isdir(os.path.dirname(p["path"])):
                os.makedirs(os.path.dirname(p["path"]))
            jobs.append((p["key"], p["sha256"], p["path"]))
        s3.client()  # made once, before the threads share it
        begun = time.time()

        def restore():
            exe = _restore_interpreter(s3, manifest["interpreter"], cache)
            fetched["interpreter"] = time.time() - begun
            return exe

        with ThreadPoolExecutor(max_workers=16) as pool:
            interp = pool.submit(restore)
            for f in [pool.submit(_fetch, s3, k, sha, dest) for k, sha, dest in jobs]:
                f.result()
            fetched["files"] = time.time() - begun
            fetched["python"] = interp.result()
        os.chmod(os.path.join(WORK, "uv"), 0o755)
        fetched["seconds"] = time.time() - listed
        # the venv is made from the path the host's was (its bin/python links there): one of the restored
        # interpreter's own names (e.g. bin/python3), else its executable
        venv_python = manifest.get("venv_python") or ""
        prefix = manifest["interpreter"]["prefix"]
        if venv_python.startswith(prefix + "/") and ".." not in venv_python.split("/") and os.path.exists(venv_python):
            fetched["python"] = venv_python
        return fetched["python"]

    def build(folder):
        """The env at its own path (a link to ``folder`` when that is not the path itself: uv and the env's
        scripts name the path), built offline from the verified files; the marker last."""
        python = fetch()
        uv_cache = os.path.join(WORK, "uv-cache")
        if folder != env_path:
            os.mkdir(folder)
            link(env_path, folder)
            uv_cache = os.path.join(os.path.dirname(folder), "uv-cache")  # one file system: uv hard-links
        fetched["build"] = _build(os.path.join(WORK, "uv"), python, env_path, manifest, marker_path, uv_cache)
        if folder != env_path:
            remove_tree(uv_cache)

    # a conda env is its interpreter's prefix (cached as such); an env the host built with another uv than
    # the jobs' cannot be built the same (the host then lists no files): neither is cached as an env
    if cache and _linkable(env_path) and manifest.get("files") and env_path != manifest["interpreter"]["prefix"]:
        expected = dict(manifest["files"])
        expected[manifest["marker_name"]] = [ANY, ""]  # checked below, against the manifest's own
        try:
            tree = cached_tree(
                os.path.join(cache, "envs", env_key(manifest)), "env", expected, build, "the env %s" % env_id
            )
            with open(os.path.join(tree, manifest["marker_name"]), "rb") as fh:
                if fh.read() != _marker_bytes(manifest):
                    _warn(
                        "the env %s in the instance cache (%s) has another marker; making a private copy"
                        % (env_id, tree)
                    )
                    raise _NotCached(tree)
            _restore_interpreter(s3, manifest["interpreter"], cache)
            link(env_path, tree)
            if not fetched:
                sys.stderr.write(
                    "repro: env %s from the instance cache %s in %.2f s (manifest %.2f s, interpreter and env "
                    "checked and linked %.2f s)\n"
                    % (env_id, cache, time.time() - started, listed - started, time.time() - listed)
                )
                return 0
        except _NotCached:  # warned: a private env, as without a cache
            if os.path.islink(env_path):  # to a cached tree that is not to be used, or a removed one
                os.unlink(env_path)
            build(env_path)
    else:
        build(env_path)
    took = time.time() - started
    sys.stderr.write(
        "repro: env %s built from %s in %.2f s (manifest %.2f s, fetch and restore %.2f s: interpreter %.2f s, "
        "uv and package files %.2f s; venv %.2f s, install %.2f s, checked and placed %.2f s)%s\n"
        % (
            env_id,
            store,
            took,
            listed - started,
            fetched["seconds"],
            fetched["interpreter"],
            fetched["files"],
            fetched["build"][0],
            fetched["build"][1],
            took - (listed - started) - fetched["seconds"] - sum(fetched["build"]),
            ", kept in the instance cache %s" % cache if os.path.islink(env_path) else "",
        )
    )
    return 0


def _marker_bytes(manifest):
    return json.dumps(manifest["marker"], sort_keys=True).encode("utf-8")


def _build(uv, python, env_path, manifest, marker_path, uv_cache):
    """Make the env at ``env_path`` offline from the fetched files; the marker last. (venv s, install s)"""
    started = time.time()
    # uv unpacks each wheel once into its (fresh) cache and hard-links the env's files from there (its
    # default): half the time of copying (measured: benchmarks/bench_batch.py), the same bytes and RECORD
    # none of the image's uv settings (UV_COMPILE_BYTECODE, UV_LINK_MODE...): the env is built as the host's was
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("UV_") and k != "VIRTUAL_ENV")
    env.update(UV_CACHE_DIR=uv_cache, UV_PYTHON_DOWNLOADS="never")
    _run([uv, "venv", "--quiet", "--no-project", "--offline", "--python", python, env_path], env)
    req = os.path.join(WORK, "requirements.txt")
    with open(req, "w") as fh:
        for p in manifest["packages"]:
            fh.write("%s @ %s --hash=sha256:%s\n" % (p["name"], p["url"], p["sha256"]))
    venv = time.time()
    _run(
        [uv, "pip", "install", "--quiet", "--offline", "--no-index", "--require-hashes", "--no-deps"]
        + ["--python", os.path.join(env_path, "bin", "python"), "-r", req],
        env,
    )
    tmp = marker_path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(_marker_bytes(manifest))
    os.rename(tmp, marker_path)  # written last: the env exists only from here on
    return venv - started, time.time() - venv


def _run(cmd, env):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, universal_newlines=True)
    if proc.returncode != 0:
        raise Failed(
            "%s failed (exit %d): %s" % (os.path.basename(cmd[0]) + " " + cmd[1], proc.returncode, proc.stderr)
        )


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Failed as exc:
        sys.stderr.write("repro bootstrap: %s\n" % exc)
        sys.exit(EXIT_INTEGRITY)
