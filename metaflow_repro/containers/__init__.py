"""Docker plumbing: the base image a container replay starts from (``image``: built by debootstrap,
kept by its recipe's key) and the read-only runtime of repro mounted into a container (``runtime``)."""
