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
each interpreter restored from a verified snapshot (``pythons/<sha256>/prefix``) and each env built
offline from verified files (``envs/<key>/env``, ``key`` naming everything the env is made from). Each
is made in a private folder, indexed (every entry's kind, mode, size, modification and change time:
``tree_index``) and renamed into place whole; a later job links the recorded prefix and env path to it
only if the tree is still exactly as indexed, else it warns naming the first entry that changed, makes a
private copy as without a cache, and leaves the cached one alone (other jobs may be using it). The
task's fingerprint check then proves the env equals the lock, as always. Tasks do not write bytecode
(``PYTHONDONTWRITEBYTECODE``): a cached env is compiled once, when it is built.
"""

import hashlib
import json
import os
import queue
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
#: the instance cache's layout: a folder another layout made is never used
CACHE_FORMAT = 1


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


class _Tee(object):
    """The decompressed tar stream, read by tarfile (to check every member) while the same bytes go to
    GNU tar's standard input (to extract them, from a thread of their own, so that inflating here and
    extracting there overlap); the compressed bytes are hashed on the way."""

    def __init__(self, chunks, sink, max_inflated=MAX_INFLATED):
        self.chunks = iter(chunks)
        self.sink = sink
        self.max_inflated = max_inflated
        self.inflated = 0
        self.digest = hashlib.sha256()
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip
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


def unpack_interpreter(chunks, sha256, prefix, what, max_inflated=MAX_INFLATED):
    """Extract the interpreter tarball (gzip'd tar) whose bytes ``chunks`` yields at ``prefix``, which must
    not exist. One pass: the bytes are hashed and inflated here, every member is checked (``member_problem``)
    while GNU tar (C: a standard library is thousands of small files) extracts the same stream into a
    staging folder beside ``prefix``. The staging folder is renamed into place only if the sha256 is
    ``sha256``, no member was refused, tar succeeded and no link in the extracted tree resolves outside
    it; otherwise it is removed (with the folders this call created above it) and ``Refused`` names
    ``what``. GNU tar itself never writes outside its folder (it strips a leading "/", skips ".." members
    and defers links that point up); the stream never inflates past ``max_inflated`` bytes.

    Returns True, or False when another process put a folder at ``prefix`` meanwhile (two restores of
    the same snapshot at once): this one's copy is then removed, and the caller must prove what is
    there (its fingerprint) before using it."""
    parent = os.path.dirname(prefix)
    created = _missing_parents(parent)
    if created:
        try:
            os.makedirs(parent)
        except OSError:
            if not os.path.isdir(parent):  # another restore may have made it meanwhile
                raise
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix="." + os.path.basename(prefix) + ".restore-", dir=parent)
        os.chmod(staging, 0o755)
        with tempfile.TemporaryFile() as errors:  # a file, not a pipe: tar never blocks on its warnings
            tar = subprocess.Popen(
                ["tar", "-x", "--no-same-owner", "-C", staging, "-f", "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            tee = _Tee(chunks, tar.stdin, max_inflated)
            problem = ""
            try:
                try:
                    with tarfile.open(fileobj=tee, mode="r|", bufsize=_CHUNK) as members:
                        for member in members:
                            problem = problem or member_problem(member)
                except (tarfile.TarError, EOFError) as exc:
                    problem = "not a usable interpreter tarball (%s)" % (tee.error or exc)
                tee.drain()
            finally:
                tee.close()
                code = tar.wait()
                errors.seek(0)
                err = errors.read().decode("utf-8", "replace")
        got = tee.digest.hexdigest()
        if got != sha256:
            raise Refused("%s has sha256 %s, the record says %s; nothing was extracted" % (what, got, sha256))
        if problem:
            raise Refused("%s: %s; nothing was extracted" % (what, problem))
        if code != 0:
            raise Refused("%s: not a usable interpreter tarball (tar exit %d: %s)" % (what, code, err.strip()[-500:]))
        problem = _escapes(staging)
        if problem:
            raise Refused("%s: %s; nothing was extracted" % (what, problem))
        try:
            os.rename(staging, prefix)
        except OSError:
            if not os.path.isdir(prefix):
                raise
            remove_tree(staging)  # another process restored this prefix meanwhile: keep theirs
            return False
        return True
    except BaseException:
        if staging is not None:
            remove_tree(staging)
        for folder in created:  # deepest first: only those this call made, and only if still empty
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise


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
    to the instance cache's verified copy (restored there first if the cache has none), or else restored
    at the prefix itself."""
    exe = os.path.join(snap["prefix"], snap["executable"])
    if os.path.exists(exe):
        return exe
    if cache:
        unit = os.path.join(cache, "pythons", snap["sha256"])
        tree, problem = sealed(unit, "prefix")
        if tree is None and not problem:
            staging = _staging(os.path.dirname(unit), snap["sha256"])
            try:
                _stream_restore(s3, snap, os.path.join(staging, "prefix"))
                seal(staging, "prefix")
            except BaseException:
                remove_tree(staging)
                raise
            place(staging, unit)
            tree, problem = sealed(unit, "prefix")
        if tree is not None:
            link(snap["prefix"], tree)
            return exe
        _warn(
            "the instance cache's interpreter %s (%s) %s; restoring a private copy"
            % (snap["sha256"][:12], unit, problem)
        )
    if not _stream_restore(s3, snap, snap["prefix"]) and not os.path.exists(exe):
        # another job's restore put a folder there first, without this interpreter
        raise Failed(
            "store object %s (%s): %s appeared while it was being restored, without %s; it was left alone"
            % (snap["key"], s3.uri(snap["key"]), snap["prefix"], snap["executable"])
        )
    return exe


# -- the instance cache ------------------------------------------------------------------------------


def tree_index(root):
    """Every entry under ``root`` (not ``root`` itself), sorted, as [path relative to root, kind, mode,
    size, modification time, change time (ns), link target]: what a later job compares before it uses a
    cached tree. The change time is one no program can set back: an edited, added, removed, replaced or
    re-timed entry shows."""
    out = []
    start = len(root) + 1
    stack = [root]
    while stack:
        folder = stack.pop()
        for entry in os.scandir(folder):
            st = entry.stat(follow_symlinks=False)
            rel = entry.path[start:]
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                out.append([rel, "l", 0, 0, 0, st.st_ctime_ns, os.readlink(entry.path)])
            elif stat.S_ISDIR(mode):
                out.append([rel, "d", stat.S_IMODE(mode), 0, st.st_mtime_ns, st.st_ctime_ns, ""])
                stack.append(entry.path)
            else:
                kind = "f" if stat.S_ISREG(mode) else "?"
                out.append([rel, kind, stat.S_IMODE(mode), st.st_size, st.st_mtime_ns, st.st_ctime_ns, ""])
    out.sort()
    return out


def _first_difference(was, now):
    before = dict((e[0], e) for e in was)
    after = dict((e[0], e) for e in now)
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            return "%s was removed" % rel
        if rel not in before:
            return "%s was added" % rel
        if before[rel] != after[rel]:
            return "%s changed" % rel
    return "changed"


def seal(staging, name):
    """Index the tree ``staging/name`` (``staging/index.json``): done, before it is renamed into place."""
    doc = {"format": CACHE_FORMAT, "entries": tree_index(os.path.join(staging, name))}
    with open(os.path.join(staging, "index.json"), "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))


def sealed(unit, name):
    """``(unit/name, "")`` when the cached tree is whole and exactly as indexed; ``(None, "")`` when there
    is none; ``(None, what changed)`` when it may not be used."""
    if not os.path.isdir(unit):
        return None, ""
    try:
        with open(os.path.join(unit, "index.json")) as fh:
            doc = json.load(fh)
        was = doc["entries"]
        if doc.get("format") != CACHE_FORMAT or not isinstance(was, list):
            return None, "was made by another version of repro's bootstrap"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, "has no readable index"
    tree = os.path.join(unit, name)
    try:
        now = tree_index(tree)
    except OSError as exc:
        return None, "cannot be read (%s)" % exc
    if now != was:
        return None, "changed since it was made: %s" % _first_difference(was, now)
    return tree, ""


def _staging(parent, name):
    if not os.path.isdir(parent):
        try:
            os.makedirs(parent)
        except OSError:
            if not os.path.isdir(parent):
                raise
    return tempfile.mkdtemp(prefix=".%s." % name, dir=parent)


def place(staging, unit):
    """Rename the sealed ``staging`` to ``unit``; False (``staging`` removed) when another job placed its
    own first."""
    try:
        os.rename(staging, unit)
        return True
    except OSError:
        if not os.path.isdir(unit):
            raise
        remove_tree(staging)
        return False


def link(path, target):
    """Make ``path`` (which must not be a folder) a symbolic link to ``target``, atomically."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    tmp = "%s.repro-link-%d" % (path, os.getpid())
    os.symlink(target, tmp)
    os.rename(tmp, path)


def env_key(manifest):
    """What names a cached env: everything it is made from (uv, the interpreter snapshot and its prefix,
    each package file and the path it is installed from, the env's path and marker), not the bootstrap."""
    doc = {
        "format": CACHE_FORMAT,
        "env_id": manifest["env_id"],
        "env_path": manifest["env_path"],
        "interpreter": [manifest["interpreter"][k] for k in ("sha256", "prefix", "executable")],
        "uv": manifest["uv"]["sha256"],
        "packages": [[p["name"], p["url"], p["sha256"]] for p in manifest["packages"]],
        "marker": manifest["marker"],
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
        tmp = os.path.join(parent, ".%s.%d.tmp" % (name, os.getpid()))
        with open(tmp, "wb") as fh:
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
        path = _fetch(s3, "bootstrap/" + name, sha256, os.path.join(WORK, "manifest.json"))
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
    unit = None
    if cache:
        unit = os.path.join(cache, "envs", env_key(manifest))
        tree, problem = sealed(unit, "env")
        if tree is not None:
            _restore_interpreter(s3, manifest["interpreter"], cache)
            link(env_path, tree)
            sys.stderr.write(
                "repro: env %s from the instance cache %s in %.2f s (manifest %.2f s, interpreter and env "
                "checked and linked %.2f s)\n"
                % (env_id, cache, time.time() - started, listed - started, time.time() - listed)
            )
            return 0
        if problem:
            _warn("the instance cache's env %s (%s) %s; building a private copy" % (env_id, unit, problem))
            unit = None
    uv = os.path.join(WORK, "uv")
    jobs = [(manifest["uv"]["key"], manifest["uv"]["sha256"], uv)]
    for p in manifest["packages"]:
        # at the host's cache path: uv records the file's URL in the env (direct_url.json), so the
        # same path gives the same RECORD files, and so the fingerprint the host took
        if not os.path.isdir(os.path.dirname(p["path"])):
            os.makedirs(os.path.dirname(p["path"]))
        jobs.append((p["key"], p["sha256"], p["path"]))
    s3.client()  # made once, before the threads share it
    connected = time.time()
    with ThreadPoolExecutor(max_workers=16) as pool:
        interp = pool.submit(_restore_interpreter, s3, manifest["interpreter"], cache)
        for f in [pool.submit(_fetch, s3, k, sha, dest) for k, sha, dest in jobs]:
            f.result()
        python = interp.result()
    fetched = time.time()
    os.chmod(uv, 0o755)
    staging = None
    uv_cache = os.path.join(WORK, "uv-cache")
    compile_ = []
    if unit is not None:
        # built in a private folder of the cache, at the env's own path (a link to it: uv and the env's
        # scripts name that path), indexed, then renamed into place whole
        staging = _staging(os.path.dirname(unit), os.path.basename(unit))
        os.mkdir(os.path.join(staging, "env"))
        link(env_path, os.path.join(staging, "env"))
        uv_cache = os.path.join(staging, "uv-cache")  # the same file system: uv hard-links from it
        compile_ = ["--compile-bytecode"]  # once, here: tasks write no bytecode into a shared env
    try:
        built = _build(uv, python, env_path, manifest, marker_path, uv_cache, compile_)
        if staging is not None:
            remove_tree(uv_cache)  # the env's files are its only links now (their change time is final)
            seal(staging, "env")
            # False: another job of this instance placed the same env first (ours is removed): theirs is used
            place(staging, unit)
            staging = None
            tree, problem = sealed(unit, "env")
            if tree is None:
                raise Failed("the instance cache's env %s (%s) %s right after it was made" % (env_id, unit, problem))
            link(env_path, tree)
    except BaseException:
        if staging is not None:
            remove_tree(staging)
        raise
    sys.stderr.write(
        "repro: env %s built from %s in %.2f s (boto3 client %.2f s, manifest %.2f s, fetch and restore %.2f s, "
        "venv %.2f s, install %.2f s)%s\n"
        % (
            env_id,
            store,
            time.time() - started,
            connected - listed,
            listed - started,
            fetched - connected,
            built[0],
            built[1],
            ", kept in the instance cache %s" % cache if unit is not None else "",
        )
    )
    return 0


def _build(uv, python, env_path, manifest, marker_path, uv_cache, extra):
    """Make the env at ``env_path`` offline from the fetched files; the marker last. (venv s, install s)"""
    started = time.time()
    # uv unpacks each wheel once into its (fresh) cache and hard-links the env's files from there (its
    # default): half the time of copying (measured: benchmarks/bench_batch.py), the same bytes and RECORD
    env = dict(os.environ, UV_CACHE_DIR=uv_cache, UV_PYTHON_DOWNLOADS="never")
    env.pop("VIRTUAL_ENV", None)
    _run([uv, "venv", "--quiet", "--no-project", "--offline", "--python", python, env_path], env)
    req = os.path.join(WORK, "requirements.txt")
    with open(req, "w") as fh:
        for p in manifest["packages"]:
            fh.write("%s @ %s --hash=sha256:%s\n" % (p["name"], p["url"], p["sha256"]))
    venv = time.time()
    _run(
        [uv, "pip", "install", "--quiet", "--offline", "--no-index", "--require-hashes", "--no-deps"]
        + extra
        + ["--python", os.path.join(env_path, "bin", "python"), "-r", req],
        env,
    )
    tmp = marker_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(manifest["marker"], fh, sort_keys=True)
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
