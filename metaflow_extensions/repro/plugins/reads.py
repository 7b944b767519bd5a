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


class Reads(object):
    """What one task read; ``saw`` is the audit hook's body."""

    def __init__(self, flow_dir, ignored):
        self.flow_dir = _folder(flow_dir)
        # ignored prefixes inside the flow's folder (a datastore, a code package extracted there) are
        # checked first for paths there; every other ignored prefix for paths elsewhere
        self.ignored = tuple(sorted(set(p for p in (_folder(x) for x in ignored) if p and p != self.flow_dir)))
        self.seen = set()
        self.flow = []  # paths relative to the flow's folder, in the order first read
        self.outside = []  # absolute paths
        self.active = True

    def saw(self, event, args):
        if event != "open" or not self.active:
            return
        path = args[0]
        if path.__class__ is not str or path in self.seen:
            if path.__class__ is bytes:
                self.saw(event, (os.fsdecode(path),) + tuple(args[1:]))
            return
        self.seen.add(path)
        flags = args[2]
        if flags.__class__ is int and flags & _ACCMODE not in _READING:
            return
        self._note(path if path.startswith(os.sep) else os.path.join(os.getcwd(), path))

    def _note(self, path):
        path = os.path.normpath(path)
        if path.startswith(self.ignored) or "/.metaflow/" in path or "/__pycache__/" in path:
            return
        if self.flow_dir and path.startswith(self.flow_dir):
            rel = path[len(self.flow_dir) :]
            if rel not in self.flow:
                self.flow.append(rel)
        elif path not in self.outside:
            self.outside.append(path)

    def report(self, limit):
        """The reads, as protocol.META_READS's JSON ("" for none): files that still are files, the first
        ``limit`` of each."""
        self.active = False  # what the extension looks at now is not what the step read
        flow = [p for p in self.flow if os.path.isfile(os.path.join(self.flow_dir, p))]
        outside = [p for p in self.outside if os.path.isfile(p)]
        if not flow and not outside:
            return ""
        return json.dumps(
            {
                protocol.READS_WATCHED: True,
                protocol.READS_FLOW: flow[:limit],
                protocol.READS_FLOW_COUNT: len(flow),
                protocol.READS_OUTSIDE: outside[:limit],
                protocol.READS_OUTSIDE_COUNT: len(outside),
            },
            sort_keys=True,
        )


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
    """Start noting what this task reads (the hook is installed once per task process); None on 3.7."""
    global _reads
    if _reads is not None or not hasattr(sys, "addaudithook"):
        return _reads
    ignored = [p for p in ignored_prefixes(datastore_root) if not _folder(flow_dir).startswith(_folder(p))]
    _reads = Reads(flow_dir, ignored)
    sys.addaudithook(_reads.saw)
    return _reads


def report():
    """protocol.META_READS's value for this task."""
    if _reads is None:
        return unwatched() if not hasattr(sys, "addaudithook") else ""
    return _reads.report(protocol.READS_MAX_PATHS)
