"""Coverage report of one LoRA on one model, and base-architecture detection from metadata and tensor shapes.

The report is plain data: hosts print ``summary()`` / ``lines()`` to the console or generation info, and UIs read
``to_dict()`` (JSON-safe).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lora_ext import architecture
from lora_ext.errors import Problem

_COMPONENT_LABELS = {"unet": "UNet", "te1": "TE1", "te2": "TE2"}


def detect_architecture(
    metadata: dict[str, str], shapes: dict[str, tuple[int, ...]]
) -> tuple[str, list[str]]:
    """Guess the base architecture a LoRA was trained for, by the rules of ``lora_ext.architecture``.

    metadata: safetensors ``__metadata__``. shapes: file key -> tensor shape.
    Returns (one of "SD1", "SD2", "SDXL", "SD3", "Flux", "Unknown"; evidence sentences). Tensor shapes are physical
    facts and win over metadata when both are conclusive and disagree. The resolver refuses a file whose
    architecture differs from the model's, so no guess may refuse: A1111's weak rule (any metadata -> SD1) is not
    used here, and "Other" (metadata or keys naming an architecture we do not know) reads as "Unknown".
    """
    found = architecture.detect(metadata, shapes, a1111_fallback=False)
    arch = "Unknown" if found.arch == "Other" else found.arch
    return arch, list(found.evidence)


@dataclass
class CoverageReport:
    """How one LoRA file maps onto one model.

    verdict: "ok" (every key matched), "partial" (some keys unmatched) or "refused" (nothing applied).
    layers: component -> number of target layers touched. algorithms: sorted algorithm names found.
    """

    file: str
    name: str
    model_architecture: str
    file_architecture: str = "Unknown"
    architecture_evidence: list[str] = field(default_factory=list)
    keys_total: int = 0
    keys_matched: int = 0
    unmatched: list[str] = field(default_factory=list)
    layers: dict[str, int] = field(default_factory=dict)
    algorithms: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)
    verdict: str = "ok"
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``"x: 264 keys, 264 matched (UNet 192, TE1 72), lora"``, or with unmatched keys
        ``"x: 12 of 264 keys unmatched (e.g. k1, k2, …); 252 matched (UNet 180, TE1 72), lora; is this LoRA for
        another model?"``, or ``"x: refused: <reason>"``."""
        label = self.name or os.path.basename(self.file)
        if self.verdict == "refused":
            reason = next((p.message for p in self.problems if p.severity == "error"), "nothing applied")
            return f"{label}: refused: {reason}"
        parts = ", ".join(f"{_COMPONENT_LABELS.get(c, c)} {n}" for c, n in self.layers.items() if n)
        if self.embeddings:
            parts = ", ".join(filter(None, [parts, f"{len(self.embeddings)} bundled embedding(s)"]))
        matched = f"{self.keys_matched} matched ({parts}), {'/'.join(self.algorithms) or 'no layers'}"
        if self.unmatched:
            examples = ", ".join(self.unmatched[:2]) + (", …" if len(self.unmatched) > 2 else "")
            return (
                f"{label}: {len(self.unmatched)} of {self.keys_total} keys unmatched (e.g. {examples}); "
                f"{matched}; is this LoRA for another model?"
            )
        return f"{label}: {self.keys_total} keys, {matched}"

    def lines(self, max_unmatched: int = 10) -> list[str]:
        """Multi-line detail for consoles and inspectors."""
        out = [self.summary()]
        out.append(f"  file: {self.file}")
        evidence = f" ({'; '.join(self.architecture_evidence)})" if self.architecture_evidence else ""
        out.append(
            f"  architecture: file {self.file_architecture}{evidence}, model {self.model_architecture}"
        )
        if self.embeddings:
            out.append(f"  bundled embeddings: {', '.join(self.embeddings)}")
        if self.unmatched:
            out.append(f"  unmatched keys ({len(self.unmatched)}):")
            out.extend(f"    {k}" for k in self.unmatched[:max_unmatched])
            if len(self.unmatched) > max_unmatched:
                out.append(f"    ... and {len(self.unmatched) - max_unmatched} more")
        out.extend(f"  {p.severity}: {p.message}" for p in self.problems)
        return out

    def to_dict(self) -> dict:
        """JSON-safe plain dict."""
        return {
            "file": self.file,
            "name": self.name,
            "model_architecture": self.model_architecture,
            "file_architecture": self.file_architecture,
            "architecture_evidence": list(self.architecture_evidence),
            "keys_total": self.keys_total,
            "keys_matched": self.keys_matched,
            "unmatched": list(self.unmatched),
            "layers": dict(self.layers),
            "algorithms": list(self.algorithms),
            "embeddings": list(self.embeddings),
            "verdict": self.verdict,
            "problems": [
                {
                    "subject": p.subject,
                    "message": p.message,
                    "severity": p.severity,
                    "details": list(p.details),
                }
                for p in self.problems
            ],
        }
