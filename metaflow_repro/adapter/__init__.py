"""The host-side Metaflow adapter: start a flow's run (``metaflow``), read a finished run back
(``inspect_run``), its code package (``codepackage``), the flow folder check (``flowfolder``), input
lineage (``lineage``: the runs of other flows a run read through Metaflow's client, recorded and seeded
into a replay's datastore), artifact blobs (``blobs``) and the marker of a run that started but is not
recorded yet (``pending``). Talks to Metaflow and the disk; decides nothing. The bridge the extension
calls before the first task is an edge of its own (``metaflow_repro.bridge``)."""
