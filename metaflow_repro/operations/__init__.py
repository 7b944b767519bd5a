"""Operations: one module per thing a user asks repro to do (run, replay, recover, doctor, ...). The
CLI and the pytest plugin parse and print; an operation does the work through executors, checks,
env, store and the Metaflow adapter, and returns typed results."""
