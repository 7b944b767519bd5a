"""What differs between the Metaflow releases repro supports (2.16 to 2.19), in one place.

Imported by the environment in Metaflow's runtime on the host; standard library and Metaflow only,
Python 3.7+ (tasks import the environment module too).
"""

from metaflow.version import metaflow_version

#: the first release whose code package takes ``ContentType.USER_CONTENT`` from ``add_to_package``
#: (a file packaged beside the flow file, as the flow's own code is)
USER_CONTENT_SINCE = (2, 19, 24)


def release(text=metaflow_version):
    """(major, minor, patch) of a Metaflow version string; a dev or post suffix is ignored."""
    parts = []
    for piece in text.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))


def takes_user_content(version=metaflow_version):
    return release(version) >= USER_CONTENT_SINCE


def add_user_content(environment, files):
    """What ``environment.add_to_package`` returns to package ``files`` ([(path, name)]) beside the
    flow file. Before 2.19.24 Metaflow refuses USER_CONTENT there ("Unknown file type: 1"), so the
    files are instead added to the user code the package walks (``MetaflowPackage._user_code_tuples``,
    there since 2.16), for a package whose environment names them."""
    from metaflow.packaging_sys import ContentType

    if takes_user_content():
        return [(path, name, ContentType.USER_CONTENT) for path, name in files]
    environment._repro_user_content = list(files)
    _walk_user_content()
    return []


def _walk_user_content():
    from metaflow.package import MetaflowPackage

    walk = MetaflowPackage._user_code_tuples
    if getattr(walk, "_repro_compat", False):
        return

    def _user_code_tuples(self):
        seen = set()
        for path_tuple in walk(self):
            seen.add(path_tuple[1])
            yield path_tuple
        for path, name in getattr(self._environment, "_repro_user_content", ()):
            if name not in seen:  # the flow's folder may hold it already (a --package-suffixes match)
                yield path, name

    _user_code_tuples._repro_compat = True
    MetaflowPackage._user_code_tuples = _user_code_tuples
