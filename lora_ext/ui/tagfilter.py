"""The LoRA tab's tag filter (USERS C17): which training tags a card offers, and the library's most common ones.

A card offers the tags its search text already holds (``lora_ext.ui.cards.search_tags``: kohya's
``ss_tag_frequency``, up to ``SEARCH_TAGS`` per dataset), lower-cased and stripped. The tab lists the tags most
LoRAs share; the browser filters on them client-side (javascript/lora_ext.js, ``loraExtSelect``). Everything
here runs once per card-data build, linear in the number of tags.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence

#: How many tags the filter lists (the most common in the library).
TAG_FILTER_LIMIT = 200


def card_tags(tags: Iterable[str]) -> list[str]:
    """The filter tags of one card: each tag lower-cased and stripped, empty ones dropped, first occurrence kept."""
    return list(dict.fromkeys(t for t in (tag.strip().lower() for tag in tags) if t))


def top_tags(per_card: Sequence[Sequence[str]], limit: int = TAG_FILTER_LIMIT) -> list[tuple[str, int]]:
    """The ``limit`` tags the most cards have, as (tag, number of cards), most common first, then by name.

    per_card: each card's tags (``card_tags``: no duplicates within a card)."""
    counts: Counter[str] = Counter()
    for tags in per_card:
        counts.update(tags)
    return heapq.nsmallest(limit, counts.items(), key=lambda kv: (-kv[1], kv[0]))
