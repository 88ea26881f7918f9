"""The LoRA library: scanning, names, metadata, sidecars, hashes and the persistent cache (A1111-independent).

Public API::

    library = LoraLibrary([lora_dir, lyco_dir])      # cache beside the first root by default
    report = library.refresh()                       # RefreshReport(added, changed, removed, errors, duplicates, reads)
    entry = library.resolve("folder/name")           # LoraEntry | Problem ("Lora not found: x (did you mean y?)")
    library.lookup(name)                             # Resolution(entry, problems, via) with duplicate warnings
    library.hashes(entry)                            # Hashes(addnet, sha256, shorthash, source)
    library.tag_name(entry, "alias")                 # a name that resolves back to this entry
    library.write_user_metadata(entry, {...})        # {name}.json, atomic, unknown keys kept
    page_items(library)                              # plain dicts for card pages
"""

from lora_ext.library.entry import (
    ARCHS,
    EMBEDDED_PREVIEW,
    LORA_EXTENSIONS,
    CivitaiInfo,
    Hashes,
    LoraEntry,
    RefreshReport,
    Resolution,
    Summary,
)
from lora_ext.library.items import page_item, page_items
from lora_ext.library.library import LoraLibrary

__all__ = [
    "ARCHS",
    "EMBEDDED_PREVIEW",
    "LORA_EXTENSIONS",
    "CivitaiInfo",
    "Hashes",
    "LoraEntry",
    "LoraLibrary",
    "RefreshReport",
    "Resolution",
    "Summary",
    "page_item",
    "page_items",
]
