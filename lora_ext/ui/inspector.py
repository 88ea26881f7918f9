"""The inspector panel of the LoRA tab: pure functions from one library entry to HTML and editor values.

Shows training info, base model, dataset tags with counts (a click adds the tag to the activation text, handled by
javascript/lora_ext.js), the coverage against the loaded model, hashes and the file path (USERS C21, H5).
All user and file text is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any

from lora_ext.library.entry import LoraEntry
from lora_ext.library.search_terms import dataset_tags
from lora_ext.ui.cards import format_size

#: Dataset tags shown in the inspector (most frequent first).
SHOWN_TAGS = 60
#: Choices of the "sd version" field of {name}.json ("" = detect from the file).
SD_VERSIONS = ["", "SD1", "SD2", "SDXL", "Unknown"]

_TRAINING_KEYS = [
    ("ss_output_name", "Output name"),
    ("ss_sd_model_name", "Base model"),
    ("ss_base_model_version", "Base model version"),
    ("modelspec.architecture", "Architecture (modelspec)"),
    ("ss_network_module", "Network module"),
    ("ss_network_dim", "Network dim"),
    ("ss_network_alpha", "Network alpha"),
    ("ss_clip_skip", "Clip skip"),
    ("ss_num_train_images", "Training images"),
    ("ss_num_epochs", "Epochs"),
    ("ss_learning_rate", "Learning rate"),
    ("ss_resolution", "Resolution"),
]


def _row(label: str, value: Any) -> str:
    return "<tr><th>" + html.escape(label) + "</th><td>" + html.escape(str(value)) + "</td></tr>"


def _date(value: Any) -> str | None:
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _top_resolutions(metadata: dict[str, Any], n: int = 3) -> str | None:
    info = metadata.get("ss_bucket_info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            return None
    buckets = info.get("buckets") if isinstance(info, dict) else None
    if not isinstance(buckets, dict):
        return None
    sized = []
    for b in buckets.values():
        if isinstance(b, dict) and isinstance(b.get("resolution"), list) and len(b["resolution"]) == 2:
            sized.append((int(b.get("count", 0)), f"{b['resolution'][0]}x{b['resolution'][1]}"))
    sized.sort(reverse=True)
    return ", ".join(f"{res} ({count})" for count, res in sized[:n]) or None


def metadata_rows(entry: LoraEntry) -> list[tuple[str, str]]:
    """(label, value) rows of the metadata table, in display order; empty values left out."""
    md = entry.metadata
    rows = [("File", entry.path), ("Size", format_size(entry.size)), ("Architecture", entry.arch)]
    rows.append(("Detected from", entry.arch_source))
    s = entry.summary
    if s.algorithms:
        rows.append(("Algorithm", ", ".join(s.algorithms)))
    if s.rank:
        rows.append(("Rank", ", ".join(str(r) for r in s.ranks) if len(s.ranks) > 1 else str(s.rank)))
    if s.alpha is not None:
        rows.append(("Alpha", f"{s.alpha:g}"))
    if s.layer_count:
        rows.append(("Layers / keys", f"{s.layer_count} / {s.key_count}"))
    if s.dtypes:
        rows.append(("Dtypes", ", ".join(s.dtypes)))
    for key, label in _TRAINING_KEYS:
        if md.get(key) not in (None, "", "None"):
            rows.append((label, str(md[key])))
    started = _date(md.get("ss_training_started_at"))
    if started:
        rows.append(("Training started", started))
    res = _top_resolutions(md)
    if res:
        rows.append(("Top resolutions", res))
    if entry.civitai is not None and entry.civitai.found:
        rows.append(("Civitai base model", entry.civitai.base_model))
        if entry.civitai.trained_words:
            rows.append(("Trained words", ", ".join(entry.civitai.trained_words)))
    if entry.sshs_model_hash:
        rows.append(("Embedded hash (sshs_model_hash)", entry.sshs_model_hash))
    return rows


def civitai_url(entry: LoraEntry) -> str | None:
    """The Civitai page of the model version ``{name}.civitai.info`` describes (USERS C8), or None."""
    info = entry.civitai
    if info is None or not info.found or info.model_id is None:
        return None
    url = f"https://civitai.com/models/{int(info.model_id)}"
    return url if info.version_id is None else f"{url}?modelVersionId={int(info.version_id)}"


def inspector_html(
    entry: LoraEntry,
    *,
    prefix: str,
    coverage: str | None = None,
    hashes: Any | None = None,
) -> str:
    """The read-only part of the inspector for ``entry``.

    coverage: one-paragraph text of the coverage report against the loaded model (None = not computed).
    hashes: a library ``Hashes`` value (addnet, sha256, shorthash) when computed.
    """
    esc = html.escape
    parts = ['<div class="lora-ext-inspector"><h3>', esc(entry.name)]
    if entry.alias != entry.name:
        parts += [' <span class="lora-ext-alias">(', esc(entry.alias), ")</span>"]
    parts.append('</h3><table class="lora-ext-meta-table">')
    parts += [_row(label, value) for label, value in metadata_rows(entry)]
    link = civitai_url(entry)
    if link:
        parts += [
            '<tr><th>Civitai page</th><td><a href="',
            esc(link, quote=True),
            '" target="_blank" rel="noopener noreferrer">',
            esc(link),
            "</a></td></tr>",
        ]
    if hashes is not None:
        parts.append(_row("LoRA hash (A1111 addnet, tensors only)", getattr(hashes, "addnet", "")))
        parts.append(_row("Short hash (infotext)", getattr(hashes, "shorthash", "")))
        if getattr(hashes, "sha256", None):
            parts.append(_row("File sha256 (sha256sum, Civitai AutoV2)", hashes.sha256))
    parts.append("</table>")
    if coverage:
        parts += [
            '<div class="lora-ext-coverage"><b>Coverage against the loaded model:</b> ',
            esc(coverage),
            "</div>",
        ]
    for p in entry.problems:
        parts += ['<div class="lora-ext-problem">', esc(str(p)), "</div>"]
    words = list(entry.civitai.trained_words) if entry.civitai is not None and entry.civitai.found else []
    if words:  # opt-in: nothing is inserted until the user picks a word (USERS S13, C8)
        parts.append(
            '<div class="lora-ext-dstags"><b>Trigger words (Civitai)</b> (click to add to the activation text):<br>'
        )
        parts += [_tag_button(prefix, word) + "</button>" for word in words]
        parts.append("</div>")
    tags = dataset_tags(entry.metadata)
    if tags:
        parts.append(
            '<div class="lora-ext-dstags"><b>Dataset tags</b> (click to add to the activation text):<br>'
        )
        for tag, count in tags[:SHOWN_TAGS]:
            parts += [_tag_button(prefix, tag), " <small>", str(count), "</small></button>"]
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def _tag_button(prefix: str, tag: str) -> str:
    """The opening of a word button javascript/lora_ext.js adds to the activation text (caller closes it)."""
    esc = html.escape
    return (
        f'<button class="lora-ext-dstag" data-prefix="{esc(prefix, quote=True)}" data-tag="{esc(tag, quote=True)}">'
        + esc(tag)
    )


def editor_values(entry: LoraEntry) -> dict[str, Any]:
    """Values of the user-metadata editor fields from ``{name}.json`` (A1111 editor keys, USERS C6; ``tags``: the
    user's own tags, comma-separated, C17)."""
    um = entry.user_metadata
    version = um.get("sd version", "")
    weight = um.get("preferred weight", 0)
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        weight = 0.0
    return {
        "description": str(um.get("description", entry.description or "")),
        "sd version": version if version in SD_VERSIONS else "",
        "activation text": str(um.get("activation text", "")),
        "preferred weight": weight,
        "negative text": str(um.get("negative text", "")),
        "notes": str(um.get("notes", "")),
        "tags": ", ".join(entry.user_tags),
    }


def merged_user_metadata(entry: LoraEntry, edits: dict[str, Any]) -> dict[str, Any]:
    """The whole ``{name}.json`` dict to write: the file's keys (unknown ones kept, C6) updated with ``edits``.
    An empty "sd version" becomes None, which ``LoraLibrary.write_user_metadata`` removes (detection decides)."""
    data = dict(entry.user_metadata)
    data.update(edits)
    if not data.get("sd version"):
        data["sd version"] = None
    return data
