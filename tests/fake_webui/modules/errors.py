"""Fake ``modules.errors`` (A1111_CONTRACT.md §9.2): ``display``/``report`` record what they show for tests."""

from __future__ import annotations

import sys
import traceback

#: Every reported message, in order (tests assert on it). Fresh per test (the fixture re-imports ``modules``).
reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    text = message
    if exc_info:
        text += "\n" + traceback.format_exc()
    reported.append(text)
    print(text, file=sys.stderr)


def display(e: Exception, task, *, full_traceback=False):
    reported.append(f"{task or 'error'}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)


def print_error_explanation(message):
    reported.append(message)
