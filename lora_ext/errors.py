"""User-caused problems as values, never as tracebacks.

A ``Problem`` is what a host shows to a user: it names the file or tag, says what is wrong and what to do.
Functions that can fail because of user input return ``T | Problem`` (or collect problems in a list);
they do not raise for user errors. Programming errors still raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Problem:
    """One user-facing message.

    subject: the file path, tag text or LoRA name the message is about.
    message: full sentence(s): what is wrong and what to do.
    severity: "error" (nothing applied for this subject), "warning" (applied with a caveat) or "info".
    details: optional extra lines (e.g. unmatched keys) for consoles and inspectors.
    """

    subject: str
    message: str
    severity: Severity = "error"
    details: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


def is_problem(value: object) -> bool:
    """True when ``value`` is a Problem (helper for ``T | Problem`` returns)."""
    return isinstance(value, Problem)
