"""Natural sort key ("a2" before "a10"), case-insensitive, as A1111 sorts file listings."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Key for ``sorted``: digit runs compare as numbers, the rest case-insensitively.

    Each part is tagged (0 for numbers, 1 for text) so mixed parts never compare int with str.
    """
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower()) for part in _DIGITS.split(text) if part
    )
