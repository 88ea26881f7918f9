"""Coverage report of one LoRA on one model, and base-architecture detection from metadata and tensor shapes.

The report is plain data: hosts print ``summary()`` / ``lines()`` to the console or generation info, and UIs read
``to_dict()`` (JSON-safe).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from lora_ext.errors import Problem

_COMPONENT_LABELS = {"unet": "UNet", "te1": "TE1", "te2": "TE2"}

#: ``modelspec.architecture`` prefixes -> architecture (FORMATS.md §4).
_MODELSPEC = (
    ("stable-diffusion-xl", "SDXL"),
    ("stable-diffusion-v2", "SD2"),
    ("stable-diffusion-v1", "SD1"),
    ("stable-diffusion-v3", "SD3"),
    ("stable-diffusion-3", "SD3"),
    ("flux", "Flux"),
)

#: ``ss_base_model_version`` prefixes -> architecture (kohya).
_SS_BASE = (("sdxl", "SDXL"), ("sd_v2", "SD2"), ("sd_v1", "SD1"), ("sd3", "SD3"), ("flux", "Flux"))

#: SDXL-architecture families users know by their own names (USERS.md F6); Pony V7 is not SDXL.
_SDXL_FAMILY_NAMES = ("pony", "illustrious", "noobai")

#: Cross-attention key width (``attn2.to_k`` input) -> architecture.
_CONTEXT_WIDTHS = {768: "SD1", 1024: "SD2", 2048: "SDXL"}

#: Text-encoder width (q_proj input) of a file's only text encoder -> architecture (SDXL is caught by TE2 keys).
_TE_WIDTHS = {768: "SD1", 1024: "SD2"}
_TE1_MARKERS = ("lora_te_", "lora_te1_", "text_encoder.", "text_encoders.clip_l.", "text_encoders.clip_h.")
_DOWN_PARTS = ("lora_down", "lora_A", "lora_linear_layer_down", "lora_down_weight")
#: SD1/SD2 UNets have one transformer block per Transformer2D; a block index >= 1 means SDXL.
_DEEP_TRANSFORMER = re.compile(r"transformer_blocks_([1-9]\d*)_")

_TE2_MARKERS = ("lora_te2_", "text_encoder_2.", "text_encoders.clip_g.")
_FLUX_MARKERS = ("double_blocks", "single_blocks", "single_transformer_blocks")
_SD3_MARKERS = ("joint_blocks", "context_block", "transformer.transformer_blocks.")


def detect_architecture(
    metadata: dict[str, str], shapes: dict[str, tuple[int, ...]]
) -> tuple[str, list[str]]:
    """Guess the base architecture a LoRA was trained for.

    metadata: safetensors ``__metadata__``. shapes: file key -> tensor shape.
    Returns (one of "SD1", "SD2", "SDXL", "SD3", "Flux", "Unknown"; evidence sentences). Tensor shapes are physical
    facts and win over metadata when both are conclusive and disagree.
    """
    evidence: list[str] = []
    from_meta = "Unknown"
    spec = metadata.get("modelspec.architecture", "").lower()
    base = metadata.get("ss_base_model_version", "").lower()
    for prefix, arch in _MODELSPEC:
        if spec.startswith(prefix):
            from_meta = arch
            evidence.append(f"modelspec.architecture = {metadata['modelspec.architecture']}")
            break
    if from_meta == "Unknown":
        for prefix, arch in _SS_BASE:
            if base.startswith(prefix):
                from_meta = arch
                evidence.append(f"ss_base_model_version = {metadata['ss_base_model_version']}")
                break
    if from_meta == "Unknown" and metadata.get("ss_v2") == "True":
        from_meta = "SD2"
        evidence.append("ss_v2 = True")
    if from_meta == "Unknown":
        names = " ".join(
            metadata.get(k, "") for k in ("ss_sd_model_name", "ss_output_name", "modelspec.title")
        )
        lowered = names.lower()
        if any(n in lowered for n in _SDXL_FAMILY_NAMES) and "v7" not in lowered:
            from_meta = "SDXL"
            evidence.append(f"base model name {names.strip()!r} is an SDXL family")
    from_shapes, shape_evidence = _architecture_from_shapes(shapes)
    evidence.extend(shape_evidence)
    if from_shapes != "Unknown":
        return from_shapes, evidence
    if from_meta == "Unknown" and metadata.get("ss_v2") == "False":
        evidence.append("ss_v2 = False")
        return "SD1", evidence
    return from_meta, evidence


def _architecture_from_shapes(shapes: dict[str, tuple[int, ...]]) -> tuple[str, list[str]]:
    keys = list(shapes)
    if any(k.startswith(_TE2_MARKERS) for k in keys):
        return "SDXL", ["has keys for a second text encoder"]
    if any(m in k for k in keys for m in _FLUX_MARKERS):
        return "Flux", ["has Flux double/single-block keys"]
    if any(m in k for k in keys for m in _SD3_MARKERS):
        return "SD3", ["has SD3 joint-block keys"]
    te_width = None
    for key, shape in shapes.items():
        low = key.replace(".", "_")
        if len(shape) < 2 or not any(p in low for p in _DOWN_PARTS):
            continue
        if "attn2" in low and "to_k" in low:
            arch = _CONTEXT_WIDTHS.get(shape[1])
            if arch:
                return arch, [f"cross-attention input width {shape[1]} ({key})"]
        if te_width is None and "q_proj" in low and key.startswith(_TE1_MARKERS):
            te_width = (shape[1], key)
    for key in keys:
        depth = _DEEP_TRANSFORMER.search(key.replace(".", "_"))
        if depth and not key.startswith(_TE1_MARKERS):
            return "SDXL", [f"transformer block {depth.group(1)} inside a UNet block ({key}): SDXL layout"]
    if te_width is not None and te_width[0] in _TE_WIDTHS:
        return _TE_WIDTHS[te_width[0]], [f"text-encoder width {te_width[0]} ({te_width[1]})"]
    return "Unknown", []


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
