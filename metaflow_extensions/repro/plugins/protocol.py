"""The host <-> task protocol (placeholder, completed by the settings branch)."""

#: a file the extension writes {"exit_code", "message"} to when repro fails inside Metaflow's process
ERROR_FILE = "REPRO_ERROR_FILE"
