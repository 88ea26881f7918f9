"""The LoRA library as the webui uses it: every refresh reports its duplicates and per-file problems on the console
(the built-in lists duplicates silently; USERS asks that none be silent)."""

from __future__ import annotations

from lora_ext.hosts.a1111 import messages
from lora_ext.library import LoraLibrary, RefreshReport


class WebuiLibrary(LoraLibrary):
    """``LoraLibrary`` whose ``refresh()`` prints ``RefreshReport.lines()`` to the console.

    A refresh that found nothing new (no added, changed or removed file, and the same duplicates and problems as
    the last report printed) prints nothing, so the rescans a tag lookup does on a miss (every batch and hires pass)
    stay quiet; the first refresh always prints its summary line.
    """

    _reported: tuple | None = None  # the duplicates and problems of the last report printed

    def refresh(self) -> RefreshReport:
        report = super().refresh()
        known = (tuple(report.duplicates), tuple(str(p) for p in report.errors if p.severity != "info"))
        if report.added or report.changed or report.removed or known != self._reported:
            self._reported = known
            for line in report.lines():
                messages.console(line)
        return report


class CurrentLibrary:
    """The host's library of the moment, for routes and the tab that are built once at startup.

    The host builds a new ``LoraLibrary`` when an option it was made with changes (``list_hidden_files``); objects
    that keep a library reference for the life of the UI hold this forwarder instead, so they never keep serving
    the old library.
    """

    def __init__(self, host: object) -> None:
        self._host = host

    def __getattr__(self, name: str) -> object:
        return getattr(self._host.library, name)
