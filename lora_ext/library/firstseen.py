"""When the library first saw a file ("date added", USERS C14), kept in the file's cache record.

The date lives in the record as ``"added"`` (seconds since the epoch, float). A record outlives changes of its file
(a replaced file at the same path keeps it) and follows a file moved or renamed inside the roots between two
refreshes (same size and mtime, ``Indexer._adopt_moved``); it goes only when the file is gone from the roots at a
refresh, so a file deleted and put back later counts as added again. No file is read for it: the walk's ``stat`` and the cache
are all it needs.
"""

from __future__ import annotations

from typing import Any


def first_seen(record: dict[str, Any] | None, mtime: float, now: float, bootstrap: bool) -> float:
    """The first-seen date of a file, in seconds since the epoch.

    record: the file's cache record, or None when the library has never seen the path.
    mtime: the file's modification time now (seconds since the epoch).
    now: the time of this refresh (seconds since the epoch).
    bootstrap: True during the first refresh of a cache that did not exist yet (or was unusable and is rebuilt):
        files already there then get their mtime, not the time of that refresh, so a first scan keeps the order
        in which the files arrived.

    A record written before dates were kept (no ``"added"``) gives the mtime it was recorded with.
    """
    if record is not None:
        added = record.get("added")
        if isinstance(added, (int, float)) and not isinstance(added, bool):
            return float(added)
        fp = record.get("fp")
        if isinstance(fp, list) and len(fp) == 2 and isinstance(fp[1], int):
            return fp[1] / 1e9
    return mtime if bootstrap else now
