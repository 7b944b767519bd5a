"""Inside a task: the objects a step reads with ``metaflow.S3``, and, in a replay, those objects given back
from the replay's verified inputs (issue 23, item 3).

``install()`` (from the step decorator's ``task_pre_step``, once per task process) wraps the methods of
``metaflow.plugins.datatools.s3.s3.S3`` that read: ``get``, ``get_many``, ``get_recursive`` (and so
``get_all``, which calls it) and ``info``. Metaflow's own objects are no step input and are left out:
its S3 datastore's (under the datastore root, but outside ``DATATOOLS_S3ROOT``) and what this run
wrote with ``S3(run=self)`` (``DATATOOLS_S3ROOT/<flow>/<run id>/``). Each object read whole is noted
once per URL: its URL, the
sha256 and size of the local file its ``S3Object`` points at, and the ETag and version id of a HEAD
through the S3 object's own client (an ETag that is a plain MD5 and not the bytes' is replaced by the
bytes' MD5: the object changed between the read and the HEAD, and the ETag names what was read). An
``info`` notes the URL, size, ETag and version, with no sha256. A ranged read is not noted.
``report()`` (from ``task_post_step``) describes them as ``protocol.META_S3_READS``, bounded.

In a replay, ``protocol.S3_INPUTS_VAR`` names a folder the replay prepared and verified. A read of a
URL its manifest lists is answered from there: the file is copied into the S3 object's temporary
folder (its sha256 checked again) and no request is made. Any other read goes to S3 as usual.

Nothing here may fail a read the step would have made without it: the noting is best effort.
Standard library only, Python 3.7 syntax: this runs in the step's own interpreter.
"""

import hashlib
import json
import os
import re
import tempfile

from . import protocol
from .reads import quiet

_MODULE = "metaflow.plugins.datatools.s3.s3"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")


def _hashes(path):
    """(sha256 hex, md5 hex, size) of a file."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


def _split(url):
    """(bucket, key) of an s3:// URL."""
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


def _whole(obj):
    """Whether an S3Object holds the whole object (not a range of it)."""
    info = getattr(obj, "range_info", None)
    if info is None:
        return True
    return not info.request_offset and info.request_length == info.total_size


def load_manifest(folder):
    """{url: (entry, file path)} of a replay's inputs folder; entries of a bad shape are left out."""
    try:
        with open(os.path.join(folder, protocol.S3_MANIFEST)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    out = {}
    for url, e in doc.items() if isinstance(doc, dict) else ():
        try:
            name = e[protocol.S3_FILE]
            ok = (
                url.startswith("s3://") and _HEX64.match(e[protocol.S3_SHA256]) and isinstance(e[protocol.S3_SIZE], int)
            )
            if ok and "/" not in name and name not in ("", ".", ".."):
                out[url] = (e, os.path.join(folder, name))
        except (KeyError, TypeError, AttributeError):
            continue
    return out


class S3Reads(object):
    """What one task read with ``metaflow.S3``, and what a replay serves it."""

    def __init__(self, served=None, limit=protocol.S3_MAX_OBJECTS, metaflows=("", "", ""), listings=False):
        self.objects = {}  # url -> entry, in the order first read (a dict: ordered): the first ``limit``
        self.more = set()  # the URLs read past those: counted only (no hash, no HEAD)
        self.limit = limit
        # URL folders: Metaflow's S3 datastore, DATATOOLS_S3ROOT (user data, even under the datastore), this run's
        self.datastore, self.data, self.own = metaflows
        self.served = served or {}
        self.listings = listings  # the served objects are all the steps read: listings may be answered

    def note(self, s3, obj):
        """Note an S3Object a read returned (its bytes, when it points at a file)."""
        try:
            url = obj.url
            if not obj.exists or not _whole(obj) or url in self.objects and self.objects[url][protocol.S3_SHA256]:
                return
            if self.metaflows(url):
                return
            if url not in self.objects and len(self.objects) >= self.limit:
                self.more.add(url)
                return
            path = obj.path
            sha, md5, size = _hashes(path) if path else ("", "", obj.size or 0)
            etag, version, plain = _head(s3, url)
            if sha and plain and _MD5.match(etag) and etag != md5:
                etag = md5  # the object changed after the read: name what was read
            self.objects[url] = {
                protocol.S3_URL: url,
                protocol.S3_VERSION: version,
                protocol.S3_ETAG: etag,
                protocol.S3_SIZE: size,
                protocol.S3_SHA256: sha,
            }
        except Exception:
            return

    def serve(self, s3, module, key):
        """An S3Object for ``key`` from the replay's inputs, or None (not served: read it from S3)."""
        try:
            url, byte_range = s3._url_and_range(key)
        except Exception:
            return None
        return None if byte_range else self.serve_url(s3, module, url)

    def serve_url(self, s3, module, url, prefix=None):
        """An S3Object for ``url`` from the replay's inputs, or None."""
        found = self.served.get(url)
        if found is None:
            return None
        entry, blob = found
        path = _copy_verified(blob, entry[protocol.S3_SHA256], s3._tmpdir, url)
        self.noted_served(url, entry)
        return module.S3Object(prefix if prefix is not None else s3._s3root, url, path)

    def metaflows(self, url):
        """Whether ``url`` is one of Metaflow's own objects, no step input."""
        if self.own and url.startswith(self.own):
            return True
        return bool(self.datastore) and url.startswith(self.datastore) and not (self.data and url.startswith(self.data))

    def noted_served(self, url, entry):
        """Note an object served from the replay's inputs as the recorded run noted it."""
        if url not in self.objects and len(self.objects) >= self.limit:
            self.more.add(url)
        elif url not in self.objects:
            self.objects[url] = {k: entry.get(k, "") for k in _REPORTED}
            self.objects[url][protocol.S3_URL] = url

    def served_under(self, prefix_url):
        """The served URLs under a prefix (as S3 lists it: the URL itself, or under it as a folder)."""
        folder = prefix_url.rstrip("/") + "/"
        return sorted(u for u in self.served if u == prefix_url or u.startswith(folder))

    def report(self, limit):
        """protocol.META_S3_READS's value ("" for none): the first ``limit`` objects, and how many."""
        if not self.objects:
            return ""
        listed = list(self.objects.values())[:limit]
        count = len(self.objects) + len(self.more)
        return json.dumps({protocol.S3_OBJECTS: listed, protocol.S3_COUNT: count}, sort_keys=True)


_REPORTED = (protocol.S3_URL, protocol.S3_VERSION, protocol.S3_ETAG, protocol.S3_SIZE, protocol.S3_SHA256)


def _head(s3, url):
    """(ETag, version id, whether that ETag is the MD5 of the bytes) of an object now, through the S3
    object's own client; ("", "", False) if it cannot say. An object encrypted with KMS or a key of the
    caller's (SSE-KMS, SSE-C) has an ETag of 32 hex digits that is no MD5 of its bytes."""
    try:
        client = s3._s3_client.client
        bucket, key = _split(url)
        with quiet():
            resp = client.head_object(Bucket=bucket, Key=key)
        version = resp.get("VersionId") or ""
        plain = resp.get("ServerSideEncryption") != "aws:kms" and not resp.get("SSECustomerAlgorithm")
        return (resp.get("ETag") or "").strip('"'), "" if version == "null" else version, plain
    except Exception:
        return "", "", False


def _copy_verified(blob, sha256, folder, url):
    """Copy a replay's input into ``folder``, checking its sha256 on the way; the copy's path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="repro-s3-")
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out, open(blob, "rb") as src:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        os.unlink(tmp)
        raise RuntimeError("repro: the replay's copy of %s does not match its recorded sha256" % url)
    return tmp


def _wrap(module, state):
    """Wrap the reading methods of ``module.S3``."""
    cls = module.S3
    get, get_many, get_recursive, info = cls.get, cls.get_many, cls.get_recursive, cls.info

    def wrapped_get(self, key=None, *args, **kwargs):
        obj = state.serve(self, module, key)
        if obj is None:
            with quiet():  # recorded as an S3 input, not as a host the step contacted
                obj = get(self, key, *args, **kwargs)
            state.note(self, obj)
        return obj

    def wrapped_get_many(self, keys, *args, **kwargs):
        keys = list(keys)
        served = [state.serve(self, module, k) for k in keys]
        live = [k for k, s in zip(keys, served) if s is None]
        with quiet():
            got = get_many(self, live, *args, **kwargs) if live else []
        for obj in got:
            state.note(self, obj)
        return _in_order(served, got)

    def wrapped_get_recursive(self, keys, *args, **kwargs):
        keys = list(keys)
        try:
            prefixes = [self._url(k) for k in keys]
        except Exception:
            prefixes = []
        found = [state.served_under(p) for p in prefixes]
        if state.listings and keys and found and all(found):
            return [state.serve_url(self, module, u, prefix=p) for p, urls in zip(prefixes, found) for u in urls]
        with quiet():
            got = get_recursive(self, keys, *args, **kwargs)
        for obj in got:
            state.note(self, obj)
        return got

    def wrapped_info(self, key=None, *args, **kwargs):
        try:
            url = self._url(key)
        except Exception:
            url = None
        if url in state.served:
            entry = state.served[url][0]
            state.noted_served(url, entry)
            return module.S3Object(self._s3root, url, None, size=entry[protocol.S3_SIZE])
        with quiet():
            obj = info(self, key, *args, **kwargs)
        state.note(self, obj)
        return obj

    for name, fn, original in (
        ("get", wrapped_get, get),
        ("get_many", wrapped_get_many, get_many),
        ("get_recursive", wrapped_get_recursive, get_recursive),
        ("info", wrapped_info, info),
    ):
        fn.__doc__, fn.__name__ = original.__doc__, name
        setattr(cls, name, fn)


def _in_order(served, got):
    """The objects of a get_many: served ones where they were asked, S3's answers in the other places."""
    live = iter(got)
    out = [s if s is not None else next(live, None) for s in served]
    return [o for o in out if o is not None] + list(live)


_state = None


def _folder(url):
    return url.rstrip("/") + "/" if url else ""


def metaflow_folders(datastore_root, data_root, flow_name, run_id):
    """(S3 datastore, DATATOOLS_S3ROOT, this run's ``S3(run=self)`` folder), each "" or ending with "/"."""
    data = _folder(data_root)
    return _folder(datastore_root), data, data + "%s/%s/" % (flow_name, run_id) if data and run_id else ""


def install(task_datastore=None, flow_name="", run_id=""):
    """Wrap metaflow.S3's reads (once per task process); the state, or None when Metaflow has no S3 here."""
    global _state
    if _state is not None:
        return _state
    try:
        import importlib

        module = importlib.import_module(_MODULE)
        storage = getattr(task_datastore, "_storage_impl", None)
        datastore_root = getattr(storage, "datastore_root", "") if getattr(storage, "TYPE", "") == "s3" else ""
        data_root = getattr(importlib.import_module("metaflow.metaflow_config"), "DATATOOLS_S3ROOT", None) or ""
        metaflows = metaflow_folders(datastore_root, data_root, flow_name, run_id)
        folder = os.environ.get(protocol.S3_INPUTS_VAR, "")
        listings = bool(folder) and os.path.isfile(os.path.join(folder, protocol.S3_COMPLETE))
        state = S3Reads(load_manifest(folder) if folder else {}, metaflows=metaflows, listings=listings)
        _wrap(module, state)
    except Exception:
        return None
    _state = state
    return _state


def report():
    """protocol.META_S3_READS's value for this task."""
    return _state.report(protocol.S3_MAX_OBJECTS) if _state is not None else ""
