"""Fake ``modules.sd_hijack`` (A1111_CONTRACT.md §9.2, §8.2 step 7): ``model_hijack.comments`` and ``embedding_db``."""

from __future__ import annotations

from modules.textual_inversion.textual_inversion import EmbeddingDatabase


class StableDiffusionModelHijack:
    def __init__(self):
        self.comments = []
        self.embedding_db = EmbeddingDatabase()
        self.extra_generation_params = {}

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}


model_hijack = StableDiffusionModelHijack()
