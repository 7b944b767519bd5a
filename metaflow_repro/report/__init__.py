"""Reports of a run: ``document`` builds the typed, versioned report from a record, its lock and the
checks' findings (and generates the JSON schema from its types); ``render`` formats it for the terminal,
Markdown, JSON and HTML (``templates/``, autoescaped). Reads results; runs and fetches nothing."""
