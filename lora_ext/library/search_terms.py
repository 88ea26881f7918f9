"""What a card search may match beyond names and descriptions: a file's hashes and its training tags (USERS C15).

Pure functions of an entry, its metadata and the hashes the library already knows; both card pages (our LoRA tab
and the webui's ``Lora`` page) use them, so a search finds the same cards on both.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from lora_ext.library.entry import Hashes, LoraEntry


def hash_terms(entry: LoraEntry, hashes: Hashes | None = None) -> list[str]:
    """The hashes a search may name (USERS C15, H4): the embedded ``sshs_model_hash`` and, when ``hashes`` is
    given, the addnet hash and the file's sha256 (whose first 10 digits are Civitai's AutoV2). Full 64-digit
    values, so any prefix typed in the search box matches."""
    values = [entry.sshs_model_hash]
    if hashes is not None:
        values += [hashes.addnet, hashes.computed_addnet, hashes.sha256]
    return list(dict.fromkeys(v for v in values if v))


def dataset_tags(metadata: dict[str, Any]) -> list[tuple[str, int]]:
    """``ss_tag_frequency`` summed over datasets, most frequent first: [(tag, count)]."""
    freq = metadata.get("ss_tag_frequency")
    if isinstance(freq, str):
        try:
            freq = json.loads(freq)
        except ValueError:
            return []
    counts: Counter[str] = Counter()
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    try:
                        counts[str(tag).strip()] += int(n)
                    except (TypeError, ValueError):
                        continue
    return [(t, n) for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if t]
