"""Executors: the places a run or a replay runs (``local``, ``docker``, ``batch``), one module each.
A place knows whether it is reachable, which run options and environment it adds, and how to run a
prepared replay; operations choose one by ``ExecutorKind`` and never test a place's name themselves."""
