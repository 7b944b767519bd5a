"""Inside a task: note every file the step opens for reading that no snapshot holds (issue 23, item 1).

``watch()`` (from the step decorator's ``task_pre_step``) installs one CPython audit hook per task
process (``sys.addaudithook``, Python 3.8+; on 3.7 the step is reported "unwatched"). The hook looks
at ``open`` events only, and keeps a path read (not written) that is:

- under the flow's folder (the folder of the flow file): a file the code package may lack (the host
  decides, it knows the package), reported relative to that folder;
- anywhere else but the ignored prefixes (the step's environment and interpreter, the code package,
  Metaflow's datastore and temporary folders, the standard system paths): reported as it is.

The filter is a couple of string checks (a set of paths seen, a tuple of prefixes). ``report()``
(from ``task_post_step``) describes what was read as ``protocol.META_READS``, bounded: the first
``READS_MAX_PATHS`` paths of each kind, and how many there were.

Standard library only, Python 3.7 syntax: this runs in the step's own interpreter.
"""

import json
import os
import sys
import tempfile

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


class Reads(object):
    """What one task read. The audit hook (``hook()``) only appends each ``open`` (and ``os.chdir``, to
    resolve relative paths later) to a list: the filter runs when the list is long (``COMPACT_AT``) and
    at the report, a couple of string checks per path not seen yet."""

    def __init__(self, flow_dir, ignored, cwd=None):
        self.flow_dir = _folder(flow_dir)
        prefixes = set(p for p in (_folder(x) for x in ignored) if p and p != self.flow_dir)
        # ignored folders inside the flow's folder (a datastore, a code package extracted there) are checked
        # for paths there, the others for paths elsewhere: one tuple each, so a read costs one of them
        inner = tuple(sorted(p for p in prefixes if self.flow_dir and p.startswith(self.flow_dir)))
        self.inner = inner + ((self.flow_dir + ".metaflow" + os.sep,) if self.flow_dir else ())
        self.ignored = tuple(sorted(prefixes - set(inner)))
        self.cwd = cwd or os.getcwd()
        self.events = []  # the hook's: (path, mode, flags) of an open, (_CHDIR, path, None) of a chdir
        self.seen = set()
        self.flow = {}  # paths relative to the flow's folder, in the order first read (a dict: ordered)
        self.outside = {}  # absolute paths
        self.active = True

    def hook(self):
        """The audit hook: as little as can be done per event."""
        append, size, compact = self.events.append, self.events.__len__, self.compact

        def saw(event, args):
            if event == "open":
                append(args)
                if size() > COMPACT_AT:
                    compact()
            elif event == _CHDIR:
                append((_CHDIR, args[0], None))

        return saw

    def compact(self):
        """Sort out the events noted so far (while ``active``), and forget them."""
        n = len(self.events)  # another thread may append meanwhile: those stay for next time
        events = self.events[:n]
        del self.events[:n]
        if not self.active:
            return
        seen, cwd, saw = self.seen, self.cwd + os.sep, self.saw
        for path, mode, flags in events:
            try:  # nothing here may fail the step's own open(): an event it cannot read is left out
                if path in seen:  # most often: a file opened again
                    continue
                seen.add(path)
                if path.__class__ is not str:
                    path = os.fsdecode(os.fspath(path))  # bytes, a path-like object (a descriptor raises)
                if path == _CHDIR and flags is None:
                    seen.discard(path)
                    if mode.__class__ is str:  # a chdir to a file descriptor is not followed
                        self.cwd = os.path.normpath(os.path.join(self.cwd, mode))
                        cwd = self.cwd + os.sep
                        seen.clear()  # a relative path names another file now
                elif flags.__class__ is not int or flags & _ACCMODE in _READING:
                    saw(path if path[:1] == "/" else cwd + path, flags)
            except Exception:
                continue

    def saw(self, path, flags):
        """An absolute ``path`` read: noted unless it is ignored."""
        if "/." in path or "//" in path:  # "./x", "a/../b", "a//b" (a hidden ".x" costs a normpath too)
            path = os.path.normpath(path)
        if "/__pycache__/" in path:
            return
        flow_dir = self.flow_dir
        if flow_dir and path.startswith(flow_dir):
            if not path.startswith(self.inner):
                self.flow[path[len(flow_dir) :]] = None
        elif not path.startswith(self.ignored) and "/.metaflow/" not in path:
            self.outside[path] = None

    def report(self, limit):
        """The reads, as protocol.META_READS's JSON ("" for none): files that still are files, the first
        ``limit`` of each."""
        self.compact()
        self.active = False  # what the extension looks at now is not what the step read
        flow, flow_count = _first_files(self.flow, limit, self.flow_dir)
        outside, outside_count = _first_files(self.outside, limit)
        if not flow and not outside:
            return ""
        return json.dumps(
            {
                protocol.READS_WATCHED: True,
                protocol.READS_FLOW: flow,
                protocol.READS_FLOW_COUNT: flow_count,
                protocol.READS_OUTSIDE: outside,
                protocol.READS_OUTSIDE_COUNT: outside_count,
            },
            sort_keys=True,
        )


def _first_files(paths, limit, folder=""):
    """(the first ``limit`` of ``paths`` that are files, how many there are): only those listed are looked
    at (a folder opened is no file read); the rest count as they are."""
    listed, looked = [], 0
    for path in paths:
        if len(listed) == limit:
            break
        looked += 1
        if os.path.isfile(folder + path):
            listed.append(path)
    return listed, len(listed) + len(paths) - looked


def ignored_prefixes(datastore_root=""):
    """Where a step's reads are never inputs: its interpreter and environment, everything on its import
    path but its flow's folder (the code package, site-packages), Metaflow's datastore, temporary
    folders, the standard system paths."""
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, tempfile.gettempdir()]
    found += [os.environ.get(protocol.EXTRACTED_ROOT_VAR, ""), datastore_root]
    found += [p for p in sys.path if p and os.path.isdir(p)]
    return [p for p in found if p] + list(SYSTEM_PREFIXES)


def unwatched():
    """The report of a task whose interpreter has no audit hooks (Python 3.7)."""
    return json.dumps({protocol.READS_WATCHED: False}, sort_keys=True)


_reads = None


def watch(flow_dir, datastore_root=""):
    """Start noting what this task reads (the hook is installed once per task process); None on 3.7, and
    when ``REPRO_WATCH_READS=0`` turns it off (the overhead benchmark's other side)."""
    global _reads
    if _reads is not None or not hasattr(sys, "addaudithook") or os.environ.get(protocol.WATCH_READS_VAR) == "0":
        return _reads
    ignored = [p for p in ignored_prefixes(datastore_root) if not _folder(flow_dir).startswith(_folder(p))]
    _reads = Reads(flow_dir, ignored)
    sys.addaudithook(_reads.hook())
    return _reads


def report():
    """protocol.META_READS's value for this task."""
    if _reads is None:
        return "" if hasattr(sys, "addaudithook") else unwatched()
    return _reads.report(protocol.READS_MAX_PATHS)
