"""The store marker (``repro-store.json`` at a store's root): what tells a repro store from any folder or
bucket prefix a store URI might name by mistake.

Push writes it when it creates a store. gc works only in a store that has it: a folder of the user's
(``code/project/main.py``, ``packages/notes.txt``) is never swept. A store made before markers existed
is recognized once by its layout (every object in it has a key of store shape) and marked then."""

from __future__ import annotations

import json
import time

from metaflow_repro.errors import BadInput
from metaflow_repro.model import validate as v
from metaflow_repro.store import layout
from metaflow_repro.store.base import Store, StoreObjectMissing

SCHEMA = "repro.store"
MARKER_MAX_BYTES = 64 << 10
STRANGERS_SHOWN = 5  # keys of no store shape a refusal names


def marker_doc() -> bytes:
    return json.dumps({"schema": SCHEMA, "version": 1, "created": time.time()}).encode()


def is_marked(store: Store) -> bool:
    """Whether the store has a marker of repro's (an object there that is not one marks nothing)."""
    try:
        data = store.get_bytes(layout.MARKER)
    except StoreObjectMissing:
        return False
    try:
        doc = v.load_json(data, v.At(f"{store.uri}/{layout.MARKER}"), "a store marker", max_bytes=MARKER_MAX_BYTES)
    except v.Invalid:
        return False
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA


def mark(store: Store) -> None:
    """Write the marker unless the store has one: a push calls this before it writes anything."""
    if not is_marked(store):
        store.put_bytes(layout.MARKER, marker_doc())


def strangers(store: Store) -> tuple[bool, list[str]]:
    """(whether the store holds any object, the first keys of no store shape in it)."""
    found, odd = False, []
    for info in store.list(""):
        found = True
        if layout.parse(info.key) is None:
            odd.append(info.key)
            if len(odd) >= STRANGERS_SHOWN:
                break
    return found, odd


def require_store(store: Store, dry_run: bool = False) -> None:
    """Refuse (``BadInput``, exit 2) what is not a repro store: a store URI that names nothing, or a
    folder/prefix with no marker that its layout does not show to be a store either. A store recognized
    by its layout is marked now (not on a dry run), so it is recognized this way only once."""
    store.require_existing()
    if is_marked(store):
        return
    found, odd = strangers(store)
    if found and not odd:
        if not dry_run:
            mark(store)
        return
    what = f"holds objects no repro store has ({v.cap(odd, STRANGERS_SHOWN)})" if odd else "is empty"
    raise BadInput(
        f"store {store.uri} has no store marker ({layout.MARKER}) and {what}: it does not look like a repro "
        "store, so gc deletes nothing there. Check the store URI (--store, REPRO_STORE or `store` under "
        f"[tool.repro]); a repro store gets its marker when the first run is pushed to it"
    )
