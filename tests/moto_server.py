"""moto's server (``python tests/moto_server.py -H 127.0.0.1 -p PORT``), with one gap of its Batch backend
filled: AWS defaults a mount point's ``readOnly`` to false, moto's job runner reads the key and fails the
job without it, and Metaflow's ``@batch(host_volumes=...)`` (the instance cache) does not write it."""

import sys

from moto.batch import models


def _with_read_only_default(init):
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for mount in (self.container_properties or {}).get("mountPoints", []):
            mount.setdefault("readOnly", False)

    return __init__


models.JobDefinition.__init__ = _with_read_only_default(models.JobDefinition.__init__)  # type: ignore[method-assign]

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
