"""Sidecar files beside a LoRA (USERS §5.3, C2-C9): user metadata, descriptions, previews, Civitai info.

Only ``{name}.json`` is ever written, atomically (temporary file + ``os.replace``), keeping unknown keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lora_ext.errors import Problem
from lora_ext.library.arch import from_civitai_base_model
from lora_ext.library.atomic import write_text_atomic
from lora_ext.library.entry import CivitaiInfo

#: Preview extensions in lookup order (A1111 ``find_preview``); the webui's samples format may be appended.
PREVIEW_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "webp", "gif")


@dataclass(frozen=True)
class SidecarData:
    """What the readable sidecars of one LoRA say.

    user_metadata: ``{name}.json`` (all keys), {} when absent or broken.
    text_description: ``{name}.txt`` or else ``{name}.description.txt`` content, "" when absent.
    civitai: parsed ``{name}.civitai.info`` or None.
    problems: broken JSON, unreadable files.
    """

    user_metadata: dict[str, Any] = field(default_factory=dict)
    text_description: str = ""
    civitai: CivitaiInfo | None = None
    problems: tuple[Problem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the cache."""
        civ = self.civitai
        return {
            "user_metadata": self.user_metadata,
            "text_description": self.text_description,
            "civitai": None if civ is None else {**civ.__dict__, "trained_words": list(civ.trained_words)},
            "problems": [[p.subject, p.message, p.severity] for p in self.problems],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SidecarData:
        """Inverse of ``to_dict``."""
        civ = data.get("civitai")
        if civ is not None and "published" not in civ:  # cached before publish dates were kept: read it again
            raise KeyError("published")
        return cls(
            user_metadata=dict(data.get("user_metadata") or {}),
            text_description=str(data.get("text_description") or ""),
            civitai=None
            if civ is None
            else CivitaiInfo(**{**civ, "trained_words": tuple(civ["trained_words"])}),
            problems=tuple(Problem(s, m, sev) for s, m, sev in data.get("problems", ())),
        )


def read_sidecars(
    folder: str, stem: str, present: Iterable[str], read_text: Callable[[str], str]
) -> SidecarData:
    """Read the sidecars of ``stem`` in ``folder``; ``present`` lists the sidecar file names that exist.

    read_text: reads one file as UTF-8 text (raises OSError); the library passes a counting reader.
    """
    present = set(present)
    problems: list[Problem] = []
    user: dict[str, Any] = {}
    text = ""
    civitai = None
    json_name = stem + ".json"
    if json_name in present:
        path = os.path.join(folder, json_name)
        loaded = _load_json(path, read_text, problems)
        if isinstance(loaded, dict):
            user = loaded
        elif loaded is not None:
            problems.append(Problem(path, "User metadata must be a JSON object; it is ignored.", "warning"))
    for suffix in (".txt", ".description.txt"):
        if stem + suffix in present:
            path = os.path.join(folder, stem + suffix)
            try:
                text = read_text(path).strip()
                break
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(path, f"Cannot read this description ({exc}).", "warning"))
    info_name = stem + ".civitai.info"
    if info_name in present:
        path = os.path.join(folder, info_name)
        loaded = _load_json(path, read_text, problems, empty_ok=True)
        civitai = parse_civitai(loaded if isinstance(loaded, dict) else {})
    return SidecarData(user, text, civitai, tuple(problems))


def parse_civitai(info: dict[str, Any]) -> CivitaiInfo:
    """Civitai model-version JSON -> ``CivitaiInfo``; an empty or minimal dict gives ``found=False`` (USERS C8)."""
    base = info.get("baseModel")
    words = info.get("trainedWords")
    model = info.get("model") if isinstance(info.get("model"), dict) else {}
    description = info.get("description") or model.get("description") or ""
    found = bool(base or words or info.get("id") or info.get("modelId"))
    return CivitaiInfo(
        found=found,
        base_model=str(base or ""),
        arch=from_civitai_base_model(str(base or "")),
        trained_words=tuple(str(w).strip() for w in words if str(w).strip())
        if isinstance(words, list)
        else (),
        description=str(description),
        model_id=_int_or_none(info.get("modelId")),
        version_id=_int_or_none(info.get("id")),
        published=_first_timestamp(info.get("publishedAt"), info.get("createdAt")),
    )


def find_preview(
    stem: str,
    siblings: frozenset[str] | set[str],
    extra_extension: str | None = None,
    accept: Callable[[str], bool] | None = None,
) -> str | None:
    """File name of the preview for ``stem`` among ``siblings`` (USERS C2): for each extension in order,
    ``{stem}.{ext}`` then ``{stem}.preview.{ext}``; None when none exists. ``accept(name)`` may veto a candidate
    (the library refuses links that leave the roots)."""
    extensions = PREVIEW_EXTENSIONS
    if extra_extension and extra_extension.lower() not in extensions:
        extensions = (*extensions, extra_extension.lower())
    for ext in extensions:
        for candidate in (f"{stem}.{ext}", f"{stem}.preview.{ext}"):
            if candidate in siblings and (accept is None or accept(candidate)):
                return candidate
    return None


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON (indent 4, UTF-8, like A1111) to ``path`` via a temporary file and ``os.replace``."""
    write_text_atomic(path, json.dumps(data, indent=4, ensure_ascii=False), prefix=".tmp-", suffix=".json")


def _load_json(path: str, read_text, problems: list[Problem], empty_ok: bool = False) -> Any:
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(path, f"Cannot read this sidecar ({exc}).", "warning"))
        return None
    if not text.strip():
        return {} if empty_ok else None
    try:
        return json.loads(text)
    except ValueError as exc:
        problems.append(
            Problem(path, f"This sidecar is not valid JSON ({exc}); it is ignored until fixed.", "warning")
        )
        return None


def _first_timestamp(*values: Any) -> float | None:
    """The first value that is an ISO 8601 date (Civitai writes ``2023-05-01T12:34:56.789Z``) as seconds since
    the epoch; a date without a zone is taken as UTC. None when no value is one."""
    for value in values:
        if not isinstance(value, str) or not value.strip():
            continue
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
