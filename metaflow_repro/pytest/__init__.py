"""The pytest plugin, an edge: ``pytest --repro flow.py`` runs each flow once and turns the outcome into
one item per step plus the ``[lock]``, ``[pickle]``, ``[baseline]`` (with a baseline) and ``[replay]``
(with ``--repro-on``) items. ``plugin`` holds the hooks and decides nothing, ``session`` runs and checks
each flow through ``metaflow_repro.operations``, ``items`` only read the session's outcome. Without ``--repro``
the plugin collects nothing."""
