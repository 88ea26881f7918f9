"""What the library keeps from one LoRA file's header: decoded metadata, key summary, detected architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lora_ext.errors import Problem
from lora_ext.formats.header_values import decode_metadata, read_scalar
from lora_ext.formats.safetensors_header import SafetensorsHeader, is_unreadable, read_safetensors_header
from lora_ext.library import arch as arch_rules
from lora_ext.library.entry import Summary
from lora_ext.library.summary import first_alpha_key, summarize

#: Metadata key holding embedded cover images (base64 list); kept out of ``LoraEntry.metadata`` (large).
COVER_KEY = "ssmd_cover_images"


@dataclass(frozen=True)
class FileData:
    """Header-derived facts about one file.

    metadata: decoded ``__metadata__`` without ``ssmd_cover_images``. cover_count: number of embedded covers.
    detection: ``arch.Detection`` from the file alone. problems: why the header could not be read, if so.
    cacheable: False when the failure may be temporary (permissions), so the next refresh tries again.
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    cover_count: int = 0
    summary: Summary = field(default_factory=Summary)
    detection: tuple[int, str, str] = (arch_rules.WEAK + 1, "Unknown", "none")
    problems: tuple[Problem, ...] = ()
    cacheable: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the cache."""
        return {
            "metadata": self.metadata,
            "cover_count": self.cover_count,
            "summary": self.summary.to_dict(),
            "detection": list(self.detection),
            "problems": [[p.subject, p.message, p.severity] for p in self.problems],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileData:
        """Inverse of ``to_dict``."""
        strength, arch, source = data["detection"]
        return cls(
            metadata=dict(data.get("metadata") or {}),
            cover_count=int(data.get("cover_count", 0)),
            summary=Summary.from_dict(data.get("summary") or {}),
            detection=(int(strength), str(arch), str(source)),
            problems=tuple(Problem(s, m, sev) for s, m, sev in data.get("problems", ())),
        )


def read_file_data(path: str, ext: str, size: int) -> FileData:
    """Read the header of one LoRA file (safetensors only; other containers would need unpickling, so they get
    an empty summary and are detected by their sidecars alone)."""
    if ext != ".safetensors":
        return FileData()
    header = read_safetensors_header(path, validate=False, file_size=size)
    if isinstance(header, Problem):
        return FileData(problems=(header,), cacheable=not is_unreadable(header))
    return file_data_from_header(header, size)


def file_data_from_header(header: SafetensorsHeader, size: int | None = None) -> FileData:
    """``FileData`` for an already parsed header (reads at most one alpha scalar from ``header.path``).

    size: the file size in bytes; when given, tensor data reaching past the end of the file (a truncated
    download) is reported.
    """
    metadata = decode_metadata(header.metadata)
    covers = metadata.pop(COVER_KEY, None)
    cover_count = sum(1 for c in covers if c) if isinstance(covers, list) else 0
    first_alpha = None
    if "ss_network_alpha" not in metadata and "lora_adapter_metadata" not in metadata:
        alpha_key = first_alpha_key(header.entries)
        if alpha_key is not None:
            first_alpha = read_scalar(header, alpha_key)
    try:
        summary = summarize(header.entries, metadata, first_alpha)
        detection = arch_rules.detect_file(metadata, header.entries)
        data_end = header.data_end()
    except (KeyError, TypeError, ValueError, IndexError):
        problem = Problem(
            header.path,
            "Not a readable safetensors file: a tensor entry of its header is malformed. Download it again or "
            "remove it.",
        )
        return FileData(metadata=metadata, cover_count=cover_count, problems=(problem,))
    problems: tuple[Problem, ...] = ()
    if size is not None and data_end > size:
        problems = (
            Problem(
                header.path,
                f"The file is truncated: its tensors need {data_end} bytes but it has {size}. The download is "
                "incomplete; download it again.",
            ),
        )
    return FileData(metadata, cover_count, summary, detection, problems)
