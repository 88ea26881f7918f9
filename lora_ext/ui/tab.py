"""The LoRA tab: one Gradio component used inside A1111 (``on_ui_tabs``) and in the standalone app.

Layout: a static browser block (search, sort, architecture, tag (user and training) and favourites filters,
descriptions on cards, folder tree, card grid, pages) driven by javascript/lora_ext.js; a data block (JSON of
``lora_ext.ui.cards.card_data``) that Python replaces on refresh; hidden textbox + button pairs through which the
browser sends "favourite" and "inspect" clicks; and the inspector with the user-metadata editor. Works with gradio
3.41 (A1111 1.10) and gradio 4.

Element ids are prefixed with ``prefix`` (default ``lora_ext``) so they never clash with the webui's.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from lora_ext.errors import Problem, is_problem
from lora_ext.library.entry import LoraEntry, parse_user_tags
from lora_ext.ui.browser import browser_html
from lora_ext.ui.cards import card_data, data_block_html, entry_keys, no_preview
from lora_ext.ui.inspector import SD_VERSIONS, editor_values, inspector_html, merged_user_metadata
from lora_ext.ui.previews import save_preview


@dataclass
class TabHost:
    """What the program around the tab provides (A1111 host or standalone app).

    library: a ``LoraLibrary`` (``refresh()``, ``entries()``, ``hashes(entry)``, ``write_user_metadata``).
    model_arch: architecture of the loaded model ("SD1", "SD2", "SDXL") or None when none is loaded.
    default_multiplier: weight inserted when a LoRA has no preferred weight.
    preferred_name: "alias" or "filename" (A1111 "refer to Lora by").
    coverage: entry -> one-line coverage summary against the loaded model, or None.
    last_image: the last generated PIL image, or None; used by "Replace preview".
    preview_url: entry -> URL of its preview image for the browser, or None for the placeholder.
    samples_format: image format "Replace preview" writes (``{name}.{samples_format}``, USERS C4).
    """

    library: Any
    model_arch: Callable[[], str | None] = lambda: None
    default_multiplier: Callable[[], float] = lambda: 1.0
    preferred_name: Callable[[], str] = lambda: "alias"
    coverage: Callable[[LoraEntry], str | None] | None = None
    last_image: Callable[[], Any] | None = None
    preview_url: Callable[[LoraEntry], str | None] = no_preview
    samples_format: str = "png"


@dataclass
class LoraTab:
    """Handles to the tab's components (for hosts that wire more events).

    render: () -> new value of ``data`` (the card records as they are now); a host that changes a setting the
    cards depend on (default multiplier, preferred name, loaded model) outputs ``render()`` to ``data``.
    """

    prefix: str
    data: Any
    refresh: Any
    status: Any
    selected: Any
    render: Callable[[], str]
    components: dict[str, Any] = field(default_factory=dict)


def _find(host: TabHost, key: str) -> LoraEntry | None:
    """The entry whose card key (``lora_ext.ui.cards.entry_keys``) is ``key``."""
    entries = host.library.entries()
    for e, k in zip(entries, entry_keys(entries), strict=True):
        if k == key:
            return e
    return None


def status_text(library: Any, report: Any = None) -> str:
    """The line beside Refresh: how many LoRAs in how many folders, and how many have problems."""
    entries = library.entries()
    roots = getattr(library, "roots", [])
    text = f"{len(entries)} LoRA{'s' if len(entries) != 1 else ''}"
    if roots:
        text += " in " + ", ".join(html.escape(r) for r in roots)
    problems = sum(1 for e in entries if e.problems)
    errors = len(getattr(report, "errors", []) or [])
    if problems or errors:
        text += f"; {problems + errors} with problems (see the card's i button)"
    if not entries:
        text += ". Put .safetensors LoRA files there and press Refresh."
    return text


def build_lora_tab(host: TabHost, prefix: str = "lora_ext") -> LoraTab:
    """Create the tab's components inside the current Gradio Blocks context and wire their events."""

    def data_now(salt: str = "") -> str:
        data = card_data(
            host.library.entries(),
            preferred_name=host.preferred_name(),
            default_multiplier=host.default_multiplier(),
            model_arch=host.model_arch(),
            preview_url=host.preview_url,
            library=host.library if hasattr(host.library, "tag_name") else None,
        )
        return data_block_html(data, prefix, salt)

    def sync(shown_arch: str):
        """The browser shows cards rendered for ``shown_arch``; re-render only when the loaded model's architecture
        is another one (USERS C19: badges follow an SD1 <-> SDXL switch without a manual refresh)."""
        return data_now() if (host.model_arch() or "") != (shown_arch or "") else gr.update()

    def refresh(progress=gr.Progress()):  # noqa: B008 - Gradio injects progress through the default
        progress(0, desc="Scanning LoRA folders")
        report = host.library.refresh()
        progress(0.8, desc="Building cards")
        return data_now(), status_text(host.library, report)

    def hidden_pair(what: str):
        box = gr.Textbox(elem_id=f"{prefix}_{what}_name", elem_classes=["lora-ext-hidden"], show_label=False)
        button = gr.Button(elem_id=f"{prefix}_{what}_button", elem_classes=["lora-ext-hidden"])
        return box, button

    with gr.Column(elem_id=f"{prefix}_root", elem_classes=["lora-ext-tab"]):
        with gr.Row(elem_classes=["lora-ext-toolbar"]):
            refresh_button = gr.Button(
                "Refresh", elem_id=f"{prefix}_refresh", size="sm", scale=0, min_width=110
            )
            status = gr.HTML(status_text(host.library), elem_id=f"{prefix}_status")
        gr.HTML(browser_html(prefix), elem_id=f"{prefix}_browser")
        # One hidden column: Gradio wraps textboxes in a bordered form block that hiding the box alone leaves visible.
        with gr.Column(elem_classes=["lora-ext-hidden"]):
            data = gr.HTML(data_now(), elem_id=f"{prefix}_data")
            fav_name, fav_button = hidden_pair("fav")
            sel_name, sel_button = hidden_pair("select")
            sync_name, sync_button = hidden_pair("sync")
        with gr.Accordion("Inspector", open=True, elem_id=f"{prefix}_inspector"):
            info = gr.HTML(
                "<p>Click the i button of a card to inspect it.</p>", elem_id=f"{prefix}_insp_info"
            )
            with gr.Row():
                description = gr.Textbox(label="Description", lines=2, elem_id=f"{prefix}_insp_description")
                notes = gr.Textbox(label="Notes", lines=2, elem_id=f"{prefix}_insp_notes")
            activation = gr.Textbox(label="Activation text", elem_id=f"{prefix}_insp_activation")
            negative = gr.Textbox(label="Negative text", elem_id=f"{prefix}_insp_negative")
            tags = gr.Textbox(
                label="Tags (your own, comma-separated; the tag filter lists them first)",
                elem_id=f"{prefix}_insp_tags",
            )
            with gr.Row():
                weight = gr.Number(
                    label="Preferred weight (0 = default multiplier; negative allowed)",
                    value=0,
                    elem_id=f"{prefix}_insp_weight",
                )
                version = gr.Dropdown(
                    SD_VERSIONS,
                    value="",
                    label="SD version (empty = detect from the file)",
                    elem_id=f"{prefix}_insp_version",
                )
            with gr.Row():
                save = gr.Button("Save", variant="primary", elem_id=f"{prefix}_insp_save")
                preview = gr.Button(
                    "Use the last generated image as preview", elem_id=f"{prefix}_insp_preview"
                )
            insp_status = gr.HTML("", elem_id=f"{prefix}_insp_status")

    editor = [description, notes, activation, negative, weight, version, tags]

    def select(name: str):
        entry = _find(host, name)
        if entry is None:
            return [f"<p>{html.escape(name)} is not in the library any more; press Refresh.</p>"] + [
                gr.update() for _ in editor
            ]
        hashes = None
        if hasattr(host.library, "hashes"):
            hashes = host.library.hashes(entry)
            hashes = None if is_problem(hashes) else hashes
        coverage = host.coverage(entry) if host.coverage else None
        v = editor_values(entry)
        body = inspector_html(entry, prefix=prefix, coverage=coverage, hashes=hashes)
        return [
            body,
            v["description"],
            v["notes"],
            v["activation text"],
            v["negative text"],
            v["preferred weight"],
            v["sd version"],
            v["tags"],
        ]

    def write(entry: LoraEntry, data_: dict) -> str | None:
        result = host.library.write_user_metadata(entry, data_)
        return str(result) if isinstance(result, Problem) else None

    def save_meta(name, desc, notes_, act, neg, w, ver, tags_):
        entry = _find(host, name)
        if entry is None:
            return gr.update(), "Select a LoRA first (the i button of a card).", gr.update()
        mine = parse_user_tags(tags_ or "")
        edits = {
            "description": desc or "",
            "notes": notes_ or "",
            "activation text": act or "",
            "negative text": neg or "",
            "preferred weight": float(w or 0),
            "sd version": ver or "",
            "tags": mine or None,  # None: no tags, the key is removed
        }
        problem = write(entry, merged_user_metadata(entry, edits))
        if problem:
            return gr.update(), html.escape(problem), gr.update()
        host.library.refresh()
        # the tags field shows what was saved (stripped, repeats dropped)
        return data_now(), f"Saved {html.escape(Path(entry.path).stem)}.json", ", ".join(mine)

    def toggle_fav(name):
        entry = _find(host, name)
        if entry is None:
            return gr.update(), f"{html.escape(name)} is not in the library any more; press Refresh."
        data_ = dict(entry.user_metadata)
        data_["favorite"] = not bool(data_.get("favorite"))
        problem = write(entry, data_)
        if problem:
            return data_now(salt=str(time.monotonic())), html.escape(problem)  # re-render: un-flip the star
        host.library.refresh()
        return data_now(), gr.update()

    def replace_preview(name):
        entry = _find(host, name)
        image = host.last_image() if host.last_image else None
        if entry is None:
            return gr.update(), "Select a LoRA first (the i button of a card)."
        if image is None:
            return gr.update(), "Generate an image first; its result becomes the preview."
        message = save_preview(host.library, entry, image, host.samples_format)
        if is_problem(message):
            return gr.update(), html.escape(str(message))
        return data_now(), html.escape(message)

    refresh_button.click(refresh, outputs=[data, status])
    sel_button.click(select, inputs=[sel_name], outputs=[info] + editor, queue=False)
    fav_button.click(toggle_fav, inputs=[fav_name], outputs=[data, status], queue=False)
    sync_button.click(sync, inputs=[sync_name], outputs=[data], queue=False)
    save.click(save_meta, inputs=[sel_name] + editor, outputs=[data, insp_status, tags])
    preview.click(replace_preview, inputs=[sel_name], outputs=[data, insp_status])

    root = _root_block()
    if root is not None:
        # A reloaded page gets the current cards, not those of the moment the UI was built.
        root.load(data_now, outputs=[data])

    return LoraTab(
        prefix=prefix,
        data=data,
        refresh=refresh_button,
        status=status,
        selected=sel_name,
        render=data_now,
        components={"info": info, "activation": activation, "save": save, "preview": preview},
    )


def _root_block() -> Any | None:
    try:
        from gradio.context import Context
    except ImportError:
        return None
    return getattr(Context, "root_block", None)
