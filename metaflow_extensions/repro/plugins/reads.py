"""Inside a task: note every file the step opens for reading that no snapshot holds, and every network
endpoint it contacts (issue 23, item 1).

``watch()`` (from the step decorator's ``task_pre_step``) installs one CPython audit hook per task
process (``sys.addaudithook``, Python 3.8+; on 3.7 the step is reported "unwatched"). The hook looks
at ``open`` events only, and keeps a path read (not written) that is:

- under the flow's folder (the folder of the flow file): a file the code package may lack (the host
  decides, it knows the package), reported relative to that folder;
- anywhere else but the ignored prefixes (the step's environment and interpreter, the code package,
  Metaflow's datastore and temporary folders, the standard system paths): reported as it is.

and ``socket.getaddrinfo`` / ``socket.connect`` events: the host and port contacted (loopback apart),
but the datastore's, Metaflow's metadata service's and the store's endpoints (``endpoint_hosts``).

The hook appends an ``open`` event to a list; sorting them out is one look-up per path (the decision
is made once per folder: a tuple of prefixes). ``report()`` (from ``task_post_step``) describes what
was read as ``protocol.META_READS``, bounded: the first ``READS_MAX_PATHS`` of each kind, and how
many there were.

Standard library only, Python 3.7 syntax: this runs in the step's own interpreter.
"""

import fnmatch
import json
import os
import socket
import sys
import tempfile
import threading
from contextlib import contextmanager
from urllib.parse import urlsplit

from . import protocol

#: folders whose files no step input comes from: the kernel's, devices, the host's configuration,
#: locale and time zone data, certificates (``/etc/ssl``), shared libraries
SYSTEM_PREFIXES = (
    "/proc/",
    "/sys/",
    "/dev/",
    "/etc/",
    "/usr/share/",
    "/usr/lib/",
    "/usr/lib64/",
    "/lib/",
    "/lib64/",
    "/run/",
    "/var/lib/",
    "/System/",
    "/Library/",
    "/private/etc/",
    "/private/var/db/",
)

#: ``flags & O_ACCMODE`` of an open for reading (read-only or read-write)
_READING = (os.O_RDONLY, os.O_RDWR)
_ACCMODE = getattr(os, "O_ACCMODE", 3)


def _folder(path):
    """``path`` as an absolute folder prefix (ending with a separator), or "" for none."""
    if not path:
        return ""
    path = os.path.abspath(path)
    return path if path.endswith(os.sep) else path + os.sep


#: the hook keeps this many events at most before sorting them out (a step may open one file a million times)
COMPACT_AT = 50000
_CHDIR = "os.chdir"
_CONNECT = "socket.connect"
_GETADDRINFO = "socket.getaddrinfo"
#: the audit events other than ``open`` the hook looks at (a set: one hash for any other event)
_OTHER_EVENTS = frozenset((_CHDIR, _CONNECT, _GETADDRINFO))
_SKIP = None  # a folder whose files are never inputs (``Reads.places``)


class Reads(object):
    """What one task read. The audit hook (``hook()``) only appends each ``open`` (and ``os.chdir``, to
    resolve relative paths later) to a list: the filter runs when the list is long (``COMPACT_AT``) and
    at the report, once per folder (``places``: folder as the step named it -> where its files go), then
    a dictionary look-up per path. Network events (rare) are noted as they come (``Endpoints``)."""

    def __init__(self, flow_dir, ignored, cwd=None, ignored_hosts=()):
        self.flow_dir = _folder(flow_dir)
        prefixes = set(p for p in (_folder(x) for x in ignored) if p and p != self.flow_dir)
        # ignored folders inside the flow's folder (a datastore, a code package extracted there) are checked
        # for paths there, the others for paths elsewhere: one tuple each, so a folder costs one of them
        inner = tuple(sorted(p for p in prefixes if self.flow_dir and p.startswith(self.flow_dir)))
        self.inner = inner + ((self.flow_dir + ".metaflow" + os.sep,) if self.flow_dir else ())
        self.ignored = tuple(sorted(prefixes - set(inner)))
        self.cwd = cwd or os.getcwd()
        self.events = []  # the hook's: (path, mode, flags) of an open, (_CHDIR, path, None) of a chdir
        self.written = set()  # paths opened for writing first: the step's own files, read back or not
        self.places = {}  # folder as an event named it -> the names read there (a dict, of .folders) or _SKIP
        #: folder (a prefix of its files: relative to the flow's folder, or absolute) -> names read there, in
        #: the order first read (dicts: ordered); one of each for the flow's folder tree and elsewhere
        self.folders = ({}, {})
        self.endpoints = Endpoints(ignored_hosts)
        self.active = True

    def hook(self):
        """The audit hook: as little as can be done per event."""
        append, size, compact, other, net = (
            self.events.append,
            self.events.__len__,
            self.compact,
            _OTHER_EVENTS,
            self.net,
        )

        def saw(event, args):
            if event == "open":
                append(args)
                if size() > COMPACT_AT:
                    compact()
            elif event in other:
                if event == _CHDIR:
                    append((_CHDIR, args[0], None))
                else:
                    net(event, args)

        return saw

    def net(self, event, args):
        """A network event, noted now (the socket it names must not be kept alive); never fails the step's call."""
        if not self.active or getattr(_QUIET, "on", False):
            return
        try:
            if event == _CONNECT:
                self.endpoints.connected(args[0], args[1])
            else:
                self.endpoints.looked_up(args[0], args[1])
        except Exception:
            pass

    def compact(self):
        """Sort out the events noted so far (while ``active``), and forget them."""
        n = len(self.events)  # another thread may append meanwhile: those stay for next time
        events = self.events[:n]
        del self.events[:n]
        if not self.active:
            return
        places, written, place = self.places, self.written, self.place
        for path, mode, flags in events:
            try:  # nothing here may fail the step's own open(): an event it cannot read is left out
                if path.__class__ is not str:
                    path = os.fsdecode(os.fspath(path))  # bytes, a path-like object (a descriptor raises)
                if flags.__class__ is not int:  # a chdir (an open's flags are an int, or None for io.open_code)
                    if flags is None and path == _CHDIR:
                        self.chdir(mode)
                        continue
                elif flags & _ACCMODE not in _READING:
                    written.add(path)
                    continue
                if written and path in written:
                    continue
                folder, sep, name = path.rpartition("/")
                folder = folder or sep  # "" (the current folder) or "/"
                where = places.get(folder, False)
                if where is False:
                    where = places[folder] = place(folder)
                if where is not _SKIP and name:
                    where[name] = None
            except Exception:
                continue

    def chdir(self, target):
        """The step changed its current folder: relative paths name other files from now on."""
        if target.__class__ is str:  # a chdir to a file descriptor is not followed
            self.cwd = os.path.normpath(os.path.join(self.cwd, target))
            for key in [k for k in self.places if k[:1] != "/"]:  # in place: compact() holds them
                del self.places[key]
            self.written.difference_update([p for p in self.written if p[:1] != "/"])

    def place(self, folder):
        """The names read in ``folder`` (as an event named it: relative, or with ".."): a dict of
        ``folders``; _SKIP when it is ignored."""
        if folder[:1] != "/":
            folder = self.cwd + "/" + folder if folder else self.cwd
        folder = os.path.normpath(folder)
        path = folder.rstrip("/") + "/"  # the folder as a prefix of its files ("/" for the root)
        if "/__pycache__/" in path or "/.metaflow/" in path:
            return _SKIP
        flow_dir = self.flow_dir
        if flow_dir and path.startswith(flow_dir):
            if path.startswith(self.inner):
                return _SKIP
            return self.folders[0].setdefault(path[len(flow_dir) :], {})
        return _SKIP if path.startswith(self.ignored) else self.folders[1].setdefault(path, {})

    def changed_after_read(self):
        """A file of the flow's folder the step read and then wrote is no input a snapshot can hold (its
        bytes at the end are not what was read): it is listed with the reads elsewhere instead."""
        flow_dir, places = self.flow_dir, self.places
        for path in list(self.written):
            folder, sep, name = path.rpartition("/")
            names = places.get(folder or sep)
            if not names or names is _SKIP or name not in names:
                continue
            for prefix, kept in self.folders[0].items():
                if kept is names:
                    del names[name]
                    self.folders[1].setdefault(flow_dir + prefix, {})[name] = None
                    break

    @property
    def flow(self):
        """The paths read in the flow's folder tree, relative to it (a dict: ordered, by folder)."""
        return dict((f + n, None) for f, names in self.folders[0].items() for n in names)

    @property
    def outside(self):
        """The absolute paths read elsewhere (a dict: ordered, by folder)."""
        return dict((f + n, None) for f, names in self.folders[1].items() for n in names)

    def report(self, limit):
        """The reads, as protocol.META_READS's JSON ("" for none): files that still are files, the first
        ``limit`` of each; the network endpoints contacted."""
        self.compact()
        self.active = False  # what the extension looks at now is not what the step read
        self.changed_after_read()
        flow, flow_count = _first_files(self.folders[0], limit, self.flow_dir)
        outside, outside_count = _first_files(self.folders[1], limit)
        hosts, loopback = self.endpoints.listed()
        if not flow and not outside and not hosts and not loopback:
            return ""
        return json.dumps(
            {
                protocol.READS_WATCHED: True,
                protocol.READS_FLOW: flow,
                protocol.READS_FLOW_COUNT: flow_count,
                protocol.READS_OUTSIDE: outside,
                protocol.READS_OUTSIDE_COUNT: outside_count,
                protocol.READS_HOSTS: hosts[:limit],
                protocol.READS_HOSTS_COUNT: len(hosts),
                protocol.READS_LOOPBACK: loopback[:limit],
                protocol.READS_LOOPBACK_COUNT: len(loopback),
            },
            sort_keys=True,
        )


#: what a step contacting them reads through no input of its own: instance and container credentials
#: (169.254.169.254, 169.254.170.2: for the datastore's S3), left out with the datastore's endpoints
CREDENTIAL_HOSTS = ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
#: the hosts of AWS's S3 (path-style: any bucket, so they cannot be told apart) and STS, left out when the
#: datastore is S3 with no endpoint of its own; its bucket's virtual hosts are added by name, never another's
AWS_S3_HOSTS = (
    "s3.amazonaws.com",
    "s3.*.amazonaws.com",
    "s3-*.amazonaws.com",
    "sts.amazonaws.com",
    "sts.*.amazonaws.com",
)
#: a bucket's own virtual hosts ({} its name)
AWS_BUCKET_HOSTS = ("{}.s3.amazonaws.com", "{}.s3.*.amazonaws.com", "{}.s3-*.amazonaws.com")
_MAX_HOST = 253
#: a lookup's port given as a service name, as a number (others: the host alone)
_SERVICES = {"http": "80", "https": "443"}
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_%:")


class Endpoints(object):
    """The network endpoints a task contacted: names it looked up (``socket.getaddrinfo``) and addresses it
    connected to (``socket.connect``, IPv4 and IPv6 only). A connect to an address is listed only when no
    name was looked up for its port (that name is the endpoint); ``ignored`` ("host", "host:port", globs:
    the datastore's and Metaflow's own services) are left out."""

    def __init__(self, ignored=()):
        self.ignored = tuple(h.lower() for h in ignored)
        self.names = {}  # (host, port) looked up -> None (a dict: ordered)
        self.addresses = {}  # (host, port) connected to -> None
        self.name_ports = set()  # the ports names (not literal addresses) were looked up for

    def looked_up(self, host, port):
        if host is None:
            return  # a passive lookup (a server's own address)
        if host.__class__ is bytes:
            host = host.decode("idna")
        port = _port(port)
        self.names[(host, port)] = None
        if not _literal(host):
            self.name_ports.add(port)

    def connected(self, sock, address):
        if getattr(sock, "family", None) not in _INET or address.__class__ is not tuple:
            return  # a Unix socket, netlink...: no network endpoint
        self.addresses[(address[0], _port(address[1]))] = None

    def listed(self):
        """(endpoints elsewhere, endpoints on this machine): "host:port", the names looked up first (in the
        order first looked up), then the addresses connected to."""
        found = list(self.names)
        found += [a for a in self.addresses if a[1] not in self.name_ports and "" not in self.name_ports]
        hosts, loopback = {}, {}
        for host, port in found:
            name = _endpoint(host, port)
            if name and not self.skipped(host, name):
                (loopback if _loopback(host) else hosts)[name] = None
        return list(hosts), list(loopback)

    def skipped(self, host, name):
        host = host.lower()
        return any(fnmatch.fnmatchcase(host, p) or fnmatch.fnmatchcase(name.lower(), p) for p in self.ignored)


_INET = tuple(getattr(socket, f) for f in ("AF_INET", "AF_INET6") if hasattr(socket, f))


def _port(port):
    """A lookup's or an address's port as text ("" for none)."""
    if port is None or port == 0:
        return ""
    if port.__class__ is bytes:
        port = port.decode("ascii", "replace")
    return str(port)


def _literal(host):
    """Whether ``host`` is an IP address (not a name)."""
    return ":" in host or host.replace(".", "").isdigit()


def _loopback(host):
    host = host.lower().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _endpoint(host, port):
    """ "host:port" ("[v6]:port"), "" for what cannot be spelled so (a record shows it; none is contacted)."""
    if not host or len(host) > _MAX_HOST or not set(host) <= _HOST_CHARS:
        try:
            host = host.encode("idna").decode("ascii")
        except Exception:
            return ""
        if not host or len(host) > _MAX_HOST or not set(host) <= _HOST_CHARS:
            return ""
    if ":" in host:
        host = "[" + host + "]"
    port = _SERVICES.get(port, port)
    return host + ":" + port if port.isdigit() and len(port) <= 5 else host  # a service name: the host


def endpoint_hosts(urls, aws_s3=False, bucket=""):
    """What the hook leaves out ("host:port" or "host"): the hosts of ``urls`` (the datastore's S3
    endpoint, Metaflow's metadata service, the store's), credential services; with ``aws_s3`` (the
    datastore is S3 with no endpoint of its own) AWS's path-style S3 hosts and the virtual hosts of the
    datastore's ``bucket`` alone: a step reading another bucket with boto3 or s3fs is listed."""
    out = list(CREDENTIAL_HOSTS)
    for url in urls:
        try:
            parts = urlsplit(url if "//" in url else "//" + url)
            host, port = parts.hostname, parts.port
        except ValueError:
            continue
        if host:
            port = port or {"http": 80, "https": 443}.get(parts.scheme)
            out.append(_endpoint(host, _port(port)) or host)
    if aws_s3:
        out += AWS_S3_HOSTS
        if bucket and all(c.isalnum() or c in ".-_" for c in bucket):
            out += [pattern.format(bucket) for pattern in AWS_BUCKET_HOSTS]
    return out


def _first_files(folders, limit, root=""):
    """(the first ``limit`` paths of ``folders`` (folder -> names) that are files, how many there are):
    only those listed are looked at (a folder opened is no file read); the rest count as they are."""
    listed, looked = [], 0
    for folder, names in folders.items():
        for name in names:
            if len(listed) == limit:
                break
            looked += 1
            if os.path.isfile(root + folder + name):
                listed.append(folder + name)
    return listed, len(listed) + sum(len(names) for names in folders.values()) - looked


def ignored_prefixes(datastore_root=""):
    """Where a step's reads are never inputs: its interpreter and environment, everything on its import
    path but its flow's folder (the code package, site-packages), Metaflow's datastore, temporary
    folders, the standard system paths."""
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, tempfile.gettempdir()]
    found += [os.environ.get(protocol.EXTRACTED_ROOT_VAR, ""), datastore_root]
    found += [p for p in sys.path if p and os.path.isdir(p)]
    return [p for p in found if p] + list(SYSTEM_PREFIXES)


def unwatched():
    """The report of a task whose reads were not watched (Python 3.7 has no audit hooks; REPRO_WATCH_READS=0)."""
    return json.dumps({protocol.READS_WATCHED: False}, sort_keys=True)


_reads = None
_QUIET = threading.local()


@contextmanager
def quiet():
    """Network traffic this thread makes inside is not the step's contact with the outside: the
    ``metaflow.S3`` reads ``s3_reads`` records (as S3 inputs a replay gives back) and its own HEADs."""
    before = getattr(_QUIET, "on", False)
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = before


def watch(flow_dir, datastore_root="", ignored_hosts=()):
    """Start noting what this task reads (the hook is installed once per task process); None on 3.7, and
    when ``REPRO_WATCH_READS=0`` turns it off (the overhead benchmark's other side). ``ignored_hosts``:
    ``endpoint_hosts()``, the services whose traffic is Metaflow's and the store's, not the step's."""
    global _reads
    if _reads is not None or not hasattr(sys, "addaudithook") or os.environ.get(protocol.WATCH_READS_VAR) == "0":
        return _reads
    ignored = [p for p in ignored_prefixes(datastore_root) if not _folder(flow_dir).startswith(_folder(p))]
    _reads = Reads(flow_dir, ignored, ignored_hosts=ignored_hosts)
    sys.addaudithook(_reads.hook())
    return _reads


def report():
    """protocol.META_READS's value for this task."""
    if _reads is None:  # no audit hooks (3.7), or REPRO_WATCH_READS=0: what it read is unknown, never "nothing"
        return unwatched()
    return _reads.report(protocol.READS_MAX_PATHS)
