"""Plain value types of the LoRA library: one ``LoraEntry`` per file, plus refresh reports and hashes.

Every type here is immutable data (frozen dataclasses; dicts inside are never mutated after construction), so a
reader holding an entry or a snapshot is never affected by a concurrent refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lora_ext.errors import Problem

#: Architecture labels. SD1/SD2/SDXL load on the matching checkpoints; SD3, Flux and Other never load on them.
Arch = Literal["SD1", "SD2", "SDXL", "SD3", "Flux", "Other", "Unknown"]
ARCHS: tuple[str, ...] = ("SD1", "SD2", "SDXL", "SD3", "Flux", "Other", "Unknown")

#: Where ``LoraEntry.arch`` came from, strongest first.
ArchSource = Literal[
    "user",  # "sd version" in {name}.json
    "keys",  # tensor key names and shapes
    "modelspec",  # modelspec.architecture
    "ss_base_model_version",
    "civitai",  # baseModel in {name}.civitai.info
    "model name",  # an SDXL-family base model name in the metadata
    "ss_v2",  # A1111's fallback rule
    "metadata",  # any metadata present -> SD1 (A1111's fallback rule)
    "none",
]

#: Extensions scanned as LoRA files (lower case, with dot).
LORA_EXTENSIONS: tuple[str, ...] = (".safetensors", ".pt", ".ckpt", ".bin")

#: ``LoraEntry.preview`` value prefix meaning "the N-th embedded ``ssmd_cover_images`` entry" (no file on disk).
EMBEDDED_PREVIEW = "embedded:ssmd_cover_images:"


def parse_user_tags(value: Any) -> list[str]:
    """User tags from a ``{name}.json`` value: a list of strings or a comma-separated string (anything else: none).
    Each tag stripped; empty ones and repeats (same text) dropped; the order written kept."""
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        return []
    return list(dict.fromkeys(t.strip() for t in items if isinstance(t, str) and t.strip()))


@dataclass(frozen=True)
class Summary:
    """What the tensor keys of a file say, without loading any tensor.

    algorithms: sorted algorithm names found (``lora``, ``loha``, ``lokr``, ``full``, ``norm``, ``ia3``, ``glora``,
        ``oft``, ``boft``, ``oft_diag``, ``dora`` for DoRA magnitudes).
    rank: the most common rank over LoRA-like modules (first dim of a down matrix), or None.
    ranks: sorted distinct ranks seen.
    alpha: network alpha from metadata (``ss_network_alpha``, ``lora_adapter_metadata``) or the first ``.alpha``
        tensor's value; None when the file has none.
    layer_count: number of distinct modules (key minus its part suffix).
    key_count: number of tensor keys.
    conventions: key families seen (``kohya``, ``peft``, ``diffusers``, ``lycoris_prefix``, ``comfy``, ``other``).
    dtypes: sorted safetensors dtype names (``F16``, ``BF16``, ``F32``, ...).
    """

    algorithms: tuple[str, ...] = ()
    rank: int | None = None
    ranks: tuple[int, ...] = ()
    alpha: float | None = None
    layer_count: int = 0
    key_count: int = 0
    conventions: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists instead of tuples)."""
        return {
            "algorithms": list(self.algorithms),
            "rank": self.rank,
            "ranks": list(self.ranks),
            "alpha": self.alpha,
            "layer_count": self.layer_count,
            "key_count": self.key_count,
            "conventions": list(self.conventions),
            "dtypes": list(self.dtypes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Inverse of ``to_dict``."""
        return cls(
            algorithms=tuple(data.get("algorithms", ())),
            rank=data.get("rank"),
            ranks=tuple(data.get("ranks", ())),
            alpha=data.get("alpha"),
            layer_count=int(data.get("layer_count", 0)),
            key_count=int(data.get("key_count", 0)),
            conventions=tuple(data.get("conventions", ())),
            dtypes=tuple(data.get("dtypes", ())),
        )


@dataclass(frozen=True)
class CivitaiInfo:
    """The parts of ``{name}.civitai.info`` (Civitai model-version JSON) the library uses.

    found: False for an empty or minimal file ("not on Civitai, do not rescan", USERS C8).
    base_model: Civitai ``baseModel`` as written (``SD 1.5``, ``Pony``, ``Illustrious``, ``Flux.1 D``, ...).
    arch: ``base_model`` mapped per USERS §5.3 (Pony/Illustrious/NoobAI -> SDXL), or "Unknown".
    trained_words: ``trainedWords`` in file order.
    description: version description (HTML as Civitai stores it), else the model description.
    model_id, version_id: Civitai ids when present.
    published: when Civitai published the version (``publishedAt``, else ``createdAt``), seconds since the epoch
        (UTC); None when the file has neither or they are not ISO 8601 dates.
    """

    found: bool = False
    base_model: str = ""
    arch: str = "Unknown"
    trained_words: tuple[str, ...] = ()
    description: str = ""
    model_id: int | None = None
    version_id: int | None = None
    published: float | None = None


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA file found under a library root.

    name: filename stem (the file name minus its LoRA extension only; inner dots are kept, USERS S8).
    alias: ``ss_output_name`` from the metadata (not "None", which kohya writes for no name), else ``name``. Whether
        the alias resolves is the library's call (a clashing alias resolves to nothing; see ``LoraLibrary.resolve``).
    relpath: ``folder/name`` relative to the root, POSIX separators, no extension.
    path: absolute path as found under the root (symlinks not resolved).
    root: the absolute root folder this file was found under.
    ext: lower-case extension with dot (``.safetensors``).
    size: bytes. mtime: modification time, seconds since the epoch (float). ctime: creation time in seconds: the
        birth time where the OS reports one, else ``st_ctime`` (on Linux: last metadata change). Not swapped, unlike
        A1111's sort keys (A1111_CONTRACT §4.2). added: when the library first saw the file, seconds since the
        epoch (kept in the cache; a replaced file keeps it; files there before the cache existed get their mtime).
    hidden: True when any folder (or the file itself) below the root starts with ``.``.
    metadata: safetensors ``__metadata__`` with JSON-valued strings decoded; ``ssmd_cover_images`` is left out (see
        ``cover_count``); empty for non-safetensors files.
    arch, arch_source: detected architecture and where it came from (see ``ArchSource``).
    summary: key summary for the inspector.
    description: user description: ``description`` in ``{name}.json``, else ``{name}.txt`` /
        ``{name}.description.txt``, else "".
    preview: absolute path of the preview image file (lookup order of USERS C2; a link leaving the roots is never
        offered), or ``EMBEDDED_PREVIEW + "0"`` for an embedded cover, or None. Serve it through
        ``LoraLibrary.preview_file`` / ``safe_path``, which check it again at request time.
    cover_count: number of embedded ``ssmd_cover_images``.
    civitai: parsed ``{name}.civitai.info`` or None when absent.
    user_metadata: ``{name}.json`` as read (all keys, unknown ones included); {} when absent.
    problems: per-file problems (unreadable header, broken sidecar JSON, ...). The file is still listed.
    """

    name: str
    alias: str
    relpath: str
    path: str
    root: str
    ext: str
    size: int
    mtime: float
    ctime: float
    added: float = 0.0
    hidden: bool = False
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    arch: str = "Unknown"
    arch_source: str = "none"
    summary: Summary = field(default_factory=Summary, compare=False, hash=False, repr=False)
    description: str = ""
    preview: str | None = None
    cover_count: int = 0
    civitai: CivitaiInfo | None = field(default=None, compare=False, hash=False, repr=False)
    user_metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    problems: tuple[Problem, ...] = field(default=(), compare=False, hash=False, repr=False)

    @property
    def filename(self) -> str:
        """File name with extension."""
        return self.name + self.ext

    @property
    def folder(self) -> str:
        """Folder part of ``relpath`` ("" at the root)."""
        return self.relpath.rpartition("/")[0]

    @property
    def activation_text(self) -> str:
        """``activation text`` from the user metadata ("" when absent)."""
        value = self.user_metadata.get("activation text", "")
        return value if isinstance(value, str) else str(value)

    @property
    def negative_text(self) -> str:
        """``negative text`` from the user metadata ("" when absent)."""
        value = self.user_metadata.get("negative text", "")
        return value if isinstance(value, str) else str(value)

    @property
    def user_tags(self) -> list[str]:
        """The user's own tags (``tags`` in ``{name}.json``, USERS C17): a JSON list of strings or one
        comma-separated string; stripped, empty ones and repeats dropped, in the order written."""
        return parse_user_tags(self.user_metadata.get("tags"))

    @property
    def preferred_weight(self) -> float | None:
        """``preferred weight`` from the user metadata; None when absent, invalid or 0 (0 means "use the default
        multiplier", USERS C7). Negative weights are kept (N2)."""
        value = self.user_metadata.get("preferred weight")
        try:
            weight = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return None if weight == 0 or weight != weight else weight

    @property
    def sshs_model_hash(self) -> str | None:
        """Embedded addnet hash (kohya ``sshs_model_hash``), lower-case, or None."""
        value = self.metadata.get("sshs_model_hash")
        if isinstance(value, str) and len(value.strip()) >= 12:
            return value.strip().lower()
        return None


@dataclass(frozen=True)
class Hashes:
    """Hashes of one file (FORMATS.md §5).

    addnet: the A1111 LoRA hash (64 hex): ``sshs_model_hash`` when the file embeds one, else sha256 of the bytes
        after the safetensors header; for ``.pt``/``.ckpt``/``.bin`` the full-file sha256.
    sha256: full-file sha256 (Civitai AutoV2 when shortened to 10, ``sha256sum``), or None when not computed.
    shorthash: first 12 hex of ``addnet`` (what A1111 writes to ``Lora hashes``).
    source: "sshs_model_hash" (embedded) or "computed".
    computed_addnet: the addnet hash computed from the bytes (may differ from an embedded one), or None.
    """

    addnet: str
    sha256: str | None
    shorthash: str
    source: str
    computed_addnet: str | None = None


@dataclass(frozen=True)
class Resolution:
    """Outcome of a name lookup: the entry (or None) plus any warnings/errors to show.

    via: which rule matched: "relpath", "name", "alias", "case-insensitive relpath|name|alias", or "" for none.
    """

    entry: LoraEntry | None
    problems: tuple[Problem, ...] = ()
    via: str = ""


@dataclass
class RefreshReport:
    """What one ``LoraLibrary.refresh()`` did.

    added, changed, removed: absolute paths of LoRA files.
    errors: per-file problems found during this refresh (the other files list fine).
    duplicates: one line per duplicated bare name or clashing alias, saying which file the bare name uses.
    reads: number of files opened and read (LoRA headers and sidecars) during this refresh.
    read_paths: the paths counted in ``reads``, in read order.
    total: number of entries after the refresh.
    """

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    reads: int = 0
    read_paths: list[str] = field(default_factory=list)
    total: int = 0

    def lines(self, limit: int = 20) -> list[str]:
        """Console lines: a one-line summary, then duplicate-name notes and per-file problems (``limit`` each;
        info notes left out), so a host can print them and no duplicate is ever silent."""
        head = f"{self.total} LoRAs ({len(self.added)} new, {len(self.changed)} changed, {len(self.removed)} removed)"
        shown = [p for p in self.errors if p.severity != "info"]
        if self.duplicates:
            head += f"; {len(self.duplicates)} duplicate name(s)"
        if shown:
            head += f"; {len(shown)} problem(s)"
        out = [head]
        out += [f"  duplicate: {line}" for line in self.duplicates[:limit]]
        out += [f"  {p.severity}: {p}" for p in shown[:limit]]
        hidden = max(0, len(self.duplicates) - limit) + max(0, len(shown) - limit)
        if hidden:
            out.append(f"  … and {hidden} more")
        return out
