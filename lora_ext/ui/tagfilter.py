"""The LoRA tab's tag filter (USERS C17): which tags a card offers, and which ones the filter lists.

A card offers the user's own tags (``tags`` in ``{name}.json``, ``LoraEntry.user_tags``) and the training tags its
search text already holds (``lora_ext.ui.cards.search_tags``: kohya's ``ss_tag_frequency``, up to ``SEARCH_TAGS``
per dataset), lower-cased and stripped. The filter lists every user tag, then the training tags most LoRAs share;
the browser filters on them client-side (javascript/lora_ext.js, ``loraExtSelect``). Everything here runs once per
card-data build, linear in the number of tags.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

TagKind = Literal["user", "training"]

#: How many tags the filter lists (the most common in the library).
TAG_FILTER_LIMIT = 200


def card_tags(tags: Iterable[str]) -> list[str]:
    """The filter tags of one card: each tag lower-cased and stripped, empty ones dropped, first occurrence kept."""
    return list(dict.fromkeys(t for t in (tag.strip().lower() for tag in tags) if t))


def listed_tags(
    user: Sequence[Sequence[str]], training: Sequence[Sequence[str]], limit: int = TAG_FILTER_LIMIT
) -> list[tuple[str, int, TagKind]]:
    """The filter's list as (tag, number of cards, kind): every tag some card's user wrote ("user"), then the
    ``limit`` most common training tags that are not user tags ("training"); each group most common first, then by
    name. A card counts once for a tag it has either way.

    user, training: per card, its ``card_tags`` of each kind (same length, same card order)."""
    counts: Counter[str] = Counter()
    for mine, trained in zip(user, training, strict=True):
        counts.update(set(mine) | set(trained))
    own = {t for mine in user for t in mine}
    key = lambda kv: (-kv[1], kv[0])  # noqa: E731
    first = sorted(((t, counts[t]) for t in own), key=key)
    rest = heapq.nsmallest(limit, ((t, n) for t, n in counts.items() if t not in own), key=key)
    return [(t, n, "user") for t, n in first] + [(t, n, "training") for t, n in rest]
