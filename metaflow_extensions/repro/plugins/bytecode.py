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
compile (a template, Python 2 code some packages carry) is left to fail as it would at import.
"""

import errno
import importlib.util
import marshal
import os
import subprocess
import sys

#: exit status of the script when a write failed
EXIT_WRITE_FAILED = 3


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
    if not os.path.isdir(folder):
        os.mkdir(folder)
    write_whole(target, data)
    return True


def compile_tree(root):
    """Compile every ``.py`` file under ``root`` (links not followed); how many ``.pyc`` were written."""
    count = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py") and "." not in name[:-3]:  # importable module names only
                count += compile_file(os.path.join(folder, name))
    return count


def compile_with(python, roots):
    """Run this module with the interpreter ``python`` over the folders ``roots`` (from the host, as another
    interpreter's bytecode is its own to write); raises the OSError it reported (ENOSPC names its file)."""
    if not roots:
        return
    proc = subprocess.run([python, "-I", os.path.abspath(__file__)] + list(roots), capture_output=True, check=False)
    if proc.returncode == 0:
        return
    said = proc.stderr.decode("utf-8", "replace").strip()
    parts = said.rsplit("\n", 1)[-1].split("\t")
    if proc.returncode == EXIT_WRITE_FAILED and len(parts) == 3 and parts[0].isdigit() and int(parts[0]):
        raise OSError(int(parts[0]), parts[2], parts[1] or None)
    raise OSError(
        errno.EIO, "compiling bytecode with %s failed (exit %d): %s" % (python, proc.returncode, said[-2000:])
    )


def main(roots):
    try:
        for root in roots:
            compile_tree(root)
    except OSError as exc:
        sys.stderr.write("%s\t%s\t%s\n" % (exc.errno or 0, exc.filename or "", exc.strerror or exc))
        return EXIT_WRITE_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
