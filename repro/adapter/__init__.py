"""The host-side Metaflow adapter: start a flow's run (``metaflow``), read a finished run back
(``inspect_run``), its code package (``codepackage``), the flow folder check (``flowfolder``), the
bridge the task-side extension calls (``bridge``), artifact blobs (``blobs``) and the marker of a run
that started but is not recorded yet (``pending``). Talks to Metaflow and the disk; decides nothing."""
