"""The data model, pure: what a step asked for (``spec``), what was locked (``lock``), what a run was
(``record``), what a check found (``findings``), what a run ran on (``interpreter``: snapshots and
executor kinds), a finished run as Metaflow's client read it back (``inspection``), what a replay run
produced before any verdict (``replay``: ``RunResult``), platforms and the PEP 751 export, and the checked
reading of untrusted documents (``validate``). No disk, network or subprocess; every codec validates what it decodes. Imports only the
base modules (``metaflow_repro.errors``, ``metaflow_repro.settings``, ...), so every layer above can use it."""
