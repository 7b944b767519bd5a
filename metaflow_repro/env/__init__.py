"""Environments, from a flow file to built interpreters (host side). ``flowfile`` reads a flow's
decorators; ``engine`` orders the work (flow -> specs -> lock -> package files -> envs); ``pypi`` and
``uvtool`` resolve with uv, ``conda`` with py-rattler (only ever in ``rattler_worker``'s process, after
``conda_meta`` has checked where each package would write), ``sdist`` builds source-only packages once, offline;
``cache`` keeps every package file content-addressed and verified before use; ``build`` makes one venv per
env id; ``pythons`` and ``interpreter_snapshot`` find and pack interpreters; ``fingerprint`` and ``probes``
see what an env holds from outside and inside; ``condalock`` and ``tls`` meet the ecosystem's formats and
trust. Decisions about specs and locks live in ``metaflow_repro.model``; this package does the disk, network and
subprocess work they need."""
