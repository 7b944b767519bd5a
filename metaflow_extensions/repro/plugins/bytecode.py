"""Compile the ``.py`` files under some folders to bytecode beside them, each ``.pyc`` written whole or not at all.

Runs with the interpreter whose bytecode it writes (an env's own, a step's): standard library only, and
valid on Python 3.7 to 3.13. Usable as a script (``python -I bytecode.py FOLDER...``: exit 0, or 3 with
``errno<TAB>file<TAB>message`` on stderr) or imported (``compile_tree``).

Why not ``py_compile``/``compileall`` (or ``uv --compile-bytecode``, which runs them): CPython writes a
``.pyc`` with one unchecked ``write()`` then renames it into place (importlib's ``_write_atomic``), so on a
full disk a truncated ``.pyc`` lands and every later import of that module fails with "marshal data too
short". Here each ``.pyc`` goes to a temporary name, its written size is checked against the data's, and only
then is it renamed; any write error stops the whole compile (the caller then marks nothing complete).

A ``.pyc`` that already exists is kept (a conda package's own, listed by its record); a source that does not
compile (a template, Python 2 code some packages carry) is left to fail as it would at import. Folders named
in ``skip`` (``--skip NAME``: an env's ``tests`` suites, 40% of numpy's and matplotlib's compile time, never
imported by a step) are not compiled: a module there that is imported after all is compiled in memory, as any
source without bytecode is.
"""

import errno
import importlib.util
import marshal
import os
import subprocess
import sys

#: exit status of the script when a write failed
EXIT_WRITE_FAILED = 3
#: at most this many compile processes at once
MAX_SHARDS = 8


def pyc_data(source, path):
    """The timestamp ``.pyc`` of ``source`` (bytes of the file at ``path``), as importlib reads it (PEP 552):
    magic, flags 0, the source's modification time and size, then the marshalled code."""
    st = os.stat(path)
    code = compile(source, path, "exec", dont_inherit=True)
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    return header + marshal.dumps(code)


def write_whole(target, data, opener=open):
    """Write ``data`` to ``target`` through a temporary name in its folder, checking that every byte was
    written before the rename; on any failure nothing is left (OSError, ENOSPC for a short write)."""
    tmp = "%s.%d.tmp" % (target, os.getpid())
    try:
        with opener(tmp, "wb", buffering=0) as fh:
            written = fh.write(data)
            if written != len(data):
                raise OSError(
                    errno.ENOSPC,
                    "short write (%s of %d bytes): %s" % (written, len(data), os.strerror(errno.ENOSPC)),
                    tmp,
                )
        if os.stat(tmp).st_size != len(data):
            raise OSError(errno.ENOSPC, "written file has the wrong size: %s" % os.strerror(errno.ENOSPC), tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not exc.filename:  # a failed write() names no file: say which
            raise OSError(exc.errno, exc.strerror, target) from None
        raise


def compile_file(path):
    """Compile the source at ``path`` to its ``__pycache__`` ``.pyc`` unless one is there; True if written."""
    folder, name = os.path.split(path)
    folder = os.path.join(folder, "__pycache__")  # beside the source, whatever PYTHONPYCACHEPREFIX says
    target = os.path.join(folder, "%s.%s.pyc" % (name[:-3], sys.implementation.cache_tag))
    if os.path.exists(target):
        return False
    with open(path, "rb") as fh:
        source = fh.read()
    try:
        data = pyc_data(source, path)
    except (SyntaxError, ValueError):
        return False  # fails at import as it would have
    try:
        os.mkdir(folder)
    except FileExistsError:  # there already, or made meanwhile by another shard
        pass
    write_whole(target, data)
    return True


def compile_tree(root, shard=0, shards=1, skip=()):
    """Compile every ``.py`` file under ``root`` (links not followed, folders named in ``skip`` not walked), or
    the ``shard``-th of ``shards`` interleaved parts of them; how many ``.pyc`` were written."""
    count = index = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and d not in skip)
        for name in sorted(files):
            if name.endswith(".py") and "." not in name[:-3]:  # importable module names only
                if index % shards == shard:
                    count += compile_file(os.path.join(folder, name))
                index += 1
    return count


def compile_with(python, roots, skip=()):
    """Run this module with the interpreter ``python`` over the folders ``roots`` (from the host, as another
    interpreter's bytecode is its own to write), folders named in ``skip`` left out; raises the OSError it
    reported (ENOSPC names its file)."""
    if not roots:
        return
    shards = max(1, min(os.cpu_count() or 1, MAX_SHARDS))  # one process per core: compiling is CPU-bound
    procs = [
        subprocess.Popen(
            [python, "-I", os.path.abspath(__file__), "--shard", "%d/%d" % (i, shards)]
            + ["--skip=%s" % name for name in skip]
            + list(roots),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(shards)
    ]
    results = [(proc.communicate()[1], proc.returncode) for proc in procs]
    for stderr, code in results:
        if code != 0:
            _raise_reported(python, stderr, code)


def _raise_reported(python, stderr, code):
    """The OSError a compile process reported (``errno<TAB>file<TAB>message``), or EIO with its output."""
    said = stderr.decode("utf-8", "replace").strip()
    parts = said.rsplit("\n", 1)[-1].split("\t")
    if code == EXIT_WRITE_FAILED and len(parts) == 3 and parts[0].isdigit() and int(parts[0]):
        raise OSError(int(parts[0]), parts[2], parts[1] or None)
    raise OSError(errno.EIO, "compiling bytecode with %s failed (exit %d): %s" % (python, code, said[-2000:]))


def main(args):
    shard, shards = 0, 1
    if args[:1] == ["--shard"]:
        shard, shards = (int(n) for n in args[1].split("/"))
        args = args[2:]
    skip = tuple(a[len("--skip=") :] for a in args if a.startswith("--skip="))
    args = [a for a in args if not a.startswith("--skip=")]
    try:
        for root in args:
            compile_tree(root, shard, shards, skip)
    except OSError as exc:
        sys.stderr.write("%s\t%s\t%s\n" % (exc.errno or 0, exc.filename or "", exc.strerror or exc))
        return EXIT_WRITE_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
