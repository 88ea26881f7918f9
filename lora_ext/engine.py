"""``LoraLoader``: read LoRA files through an LRU of parsed files and cache their resolution per model.

Hosts own one loader (no module-level state). A file is identified by (path, size, mtime_ns), so an edited or
replaced file is read again. Resolving the same file on the same loaded model (same part modules) is free.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from lora_ext.adapters import LoraFile, ResolvedLora
from lora_ext.errors import Problem
from lora_ext.formats import read_lora_file
from lora_ext.keys import ModelParts, TargetIndex, resolve

FileKey = tuple[str, int, int]


class LoraLoader:
    """Load and resolve LoRA files with bounded caches.

    max_cached: how many parsed files (and resolved LoRAs) to keep; 0 disables caching (A1111's
    "Number of Lora networks to keep cached in memory").
    """

    def __init__(self, max_cached: int = 4) -> None:
        self.max_cached = max(0, int(max_cached))
        self._files: OrderedDict[FileKey, LoraFile] = OrderedDict()
        self._resolved: OrderedDict[tuple[FileKey, tuple, str], ResolvedLora] = OrderedDict()
        self._index: tuple[tuple, TargetIndex] | None = None

    @staticmethod
    def file_key(path: str) -> FileKey | Problem:
        """(absolute path, size, mtime_ns) of ``path``, or a Problem when it cannot be found."""
        full = os.path.abspath(path)
        try:
            stat = os.stat(full)
        except OSError:
            return Problem(full, "the LoRA file does not exist; check the name or refresh the LoRA list.")
        return (full, stat.st_size, stat.st_mtime_ns)

    def load(self, path: str) -> LoraFile | Problem:
        """The parsed file, from the cache when its path, size and mtime are unchanged."""
        key = self.file_key(path)
        if isinstance(key, Problem):
            return key
        cached = self._files.get(key)
        if cached is not None:
            self._files.move_to_end(key)
            return cached
        loaded = read_lora_file(key[0])
        if isinstance(loaded, Problem):
            return loaded
        self._remember(self._files, key, loaded)
        return loaded

    def index_for(self, parts: ModelParts) -> TargetIndex:
        """The target index of ``parts``, rebuilt only when the part modules change."""
        identity = (*parts.identity(), parts.family)
        if self._index is None or self._index[0] != identity:
            self._index = (identity, TargetIndex.build(parts))
        return self._index[1]

    def resolve(self, path: str, parts: ModelParts, name: str) -> ResolvedLora | Problem:
        """Load ``path`` and map it onto ``parts``; cached per (file, model, name)."""
        key = self.file_key(path)
        if isinstance(key, Problem):
            return key
        cache_key = (key, (*parts.identity(), parts.family), name)
        cached = self._resolved.get(cache_key)
        if cached is not None:
            self._resolved.move_to_end(cache_key)
            return cached
        loaded = self.load(path)
        if isinstance(loaded, Problem):
            return loaded
        resolved = resolve(loaded, self.index_for(parts), name)
        self._remember(self._resolved, cache_key, resolved)
        return resolved

    def invalidate(self, path: str | None = None) -> None:
        """Forget cached files and resolutions (of one path, or all) and the target index."""
        if path is None:
            self._files.clear()
            self._resolved.clear()
        else:
            full = os.path.abspath(path)
            for key in [k for k in self._files if k[0] == full]:
                del self._files[key]
            for key in [k for k in self._resolved if k[0][0] == full]:
                del self._resolved[key]
        self._index = None

    def forget_models(self) -> None:
        """Drop what refers to loaded models (resolutions and the target index hold their modules) but keep the
        parsed files: for a checkpoint switch, so the old model can be freed and no LoRA file is read again."""
        self._resolved.clear()
        self._index = None

    def cached_paths(self) -> list[str]:
        """Paths of the parsed files currently cached, least recently used first."""
        return [k[0] for k in self._files]

    def _remember(self, cache: OrderedDict, key: object, value: object) -> None:
        if self.max_cached == 0:
            return
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_cached:
            cache.popitem(last=False)
