"""The LoRA user-metadata editor on the Extra Networks page (A1111_CONTRACT §5, USERS C6, C7, C21).

Fields of ``{name}.json``: description, sd version, activation text, preferred weight (any sign; 0 = use the default
multiplier), negative text, notes, and lora_ext's own ``tags`` (the user's tags, C17; the built-in has no such
field). Saving goes through the library, which merges into the existing JSON so keys written by other tools survive,
and never touches the LoRA file. The left column shows the training info table; the training tags
(``ss_tag_frequency``) are clickable and toggle themselves in the activation text. Imported only when the webui
builds the page's editor (gradio is the webui's own dependency).
"""

from __future__ import annotations

import datetime
import html
import re
from typing import Any

import gradio as gr

from lora_ext.errors import Problem
from lora_ext.library.entry import parse_user_tags
from lora_ext.library.search_terms import dataset_tags

SD_VERSIONS = ["SD1", "SD2", "SDXL", "Unknown"]
_COMMA = re.compile(r"\s*,\s*")


def toggle_tag(activation_text: str, tag: str) -> str:
    """Add ``tag`` to a comma-separated activation text, or remove it when already there."""
    words = [w for w in _COMMA.split(activation_text or "") if w.strip()]
    if tag in words:
        return ", ".join(w for w in words if w != tag)
    return ", ".join([*words, tag])


def training_rows(metadata: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) rows from kohya training metadata: output name, base model, clip skip, module, date,
    top resolutions, dataset size. Values are HTML-escaped text."""
    rows: list[tuple[str, Any]] = []
    labels = {
        "ss_output_name": "Output name:",
        "ss_sd_model_name": "Model:",
        "ss_clip_skip": "Clip skip:",
        "ss_network_module": "Kohya module:",
    }
    for key, label in labels.items():
        value = metadata.get(key)
        if value is not None and str(value) != "None":
            rows.append((label, html.escape(str(value))))
    started = metadata.get("ss_training_started_at")
    try:
        if started:
            when = datetime.datetime.fromtimestamp(float(started), tz=datetime.timezone.utc)
            rows.append(("Date trained:", when.strftime("%Y-%m-%d %H:%M")))
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    buckets = metadata.get("ss_bucket_info")
    if isinstance(buckets, dict) and isinstance(buckets.get("buckets"), dict):
        counts: dict[str, int] = {}
        for bucket in buckets["buckets"].values():
            try:
                w_h = f"{bucket['resolution'][0]}x{bucket['resolution'][1]}"
                counts[w_h] = counts.get(w_h, 0) + int(bucket.get("count", 0))
            except (KeyError, TypeError, ValueError, IndexError):
                continue
        if counts:
            top = sorted(counts, key=counts.get, reverse=True)
            text = ", ".join(top[:4]) + (", ..." if len(top) > 4 else "")
            rows.append(("Resolutions:" if len(top) > 1 else "Resolution:", html.escape(text)))
    dirs = metadata.get("ss_dataset_dirs")
    if isinstance(dirs, dict):
        try:
            images = sum(int(v.get("img_count", 0)) for v in dirs.values() if isinstance(v, dict))
        except (TypeError, ValueError):
            images = 0
        if images:
            rows.append(("Dataset size:", images))
    return rows


def make_editor(ui: Any, tabname: str, page: Any, host: Any) -> Any:
    from modules import ui_extra_networks_user_metadata

    class LoraExtMetadataEditor(ui_extra_networks_user_metadata.UserMetadataEditor):
        def __init__(self) -> None:
            super().__init__(ui, tabname, page)
            self.select_sd_version = None
            self.taginfo = None
            self.edit_activation_text = None
            self.slider_preferred_weight = None
            self.edit_negative_text = None
            self.edit_tags = None

        def entry(self, name: str) -> Any:
            item = self.page.items.get(name, {})
            return host.library.get(item.get("filename", "")) if item else None

        def get_metadata_table(self, name):
            table = super().get_metadata_table(name)
            item = self.page.items.get(name, {})
            return table + training_rows(item.get("metadata") or {})

        def put_values_into_components(self, name):
            user = self.get_user_metadata(name)
            values = super().put_values_into_components(name)
            item = self.page.items.get(name, {})
            tags = dataset_tags(item.get("metadata") or {})[:24]
            try:
                weight = float(user.get("preferred weight", 0.0) or 0.0)
            except (TypeError, ValueError):
                weight = 0.0
            return [
                *values[0:5],
                item.get("sd_version", "Unknown"),
                gr.HighlightedText.update(value=[(t, str(c)) for t, c in tags], visible=bool(tags)),
                user.get("activation text", ""),
                weight,
                user.get("negative text", ""),
                ", ".join(parse_user_tags(user.get("tags"))),
            ]

        def save_lora_user_metadata(
            self, name, desc, sd_version, activation_text, preferred_weight, negative_text, notes, tags=None
        ):
            """The built-in's save signature, plus ``tags`` (comma-separated text; None leaves them as they are,
            empty text removes them)."""
            entry = self.entry(name)
            data = {
                "description": desc,
                "sd version": sd_version,
                "activation text": activation_text,
                "preferred weight": preferred_weight,
                "negative text": negative_text,
                "notes": notes,
            }
            if tags is not None:
                data["tags"] = parse_user_tags(tags) or None
            if entry is None:  # not in the library (yet): plain whole-dict write like the webui
                user = self.get_user_metadata(name)
                for key, value in data.items():
                    if value is None:
                        user.pop(key, None)
                    else:
                        user[key] = value
                self.write_user_metadata(name, user)
                return
            result = host.library.write_user_metadata(entry, data)
            if isinstance(result, Problem):
                raise ValueError(str(result))
            item = self.page.items.get(name)
            if item is not None:
                item["user_metadata"] = dict(result.user_metadata)

        def create_extra_default_items_in_left_column(self):
            self.select_sd_version = gr.Dropdown(
                SD_VERSIONS, value="Unknown", label="Stable Diffusion version", interactive=True
            )

        def create_editor(self):
            self.create_default_editor_elems()
            self.taginfo = gr.HighlightedText(
                label="Training dataset tags (click to add to or remove from the activation text)"
            )
            self.edit_activation_text = gr.Text(
                label="Activation text", info="Will be added to prompt along with Lora"
            )
            self.slider_preferred_weight = gr.Slider(
                label="Preferred weight",
                info="Set to 0 to use the default multiplier",
                minimum=-2.0,
                maximum=2.0,
                step=0.01,
            )
            self.edit_negative_text = gr.Text(
                label="Negative prompt", info="Will be added to negative prompts"
            )
            self.edit_tags = gr.Text(
                label="Tags", info="Your own tags, comma-separated: searchable here, a filter on the LoRA tab"
            )
            self.edit_notes = gr.TextArea(label="Notes", lines=4)

            def select_tag(activation_text, evt: gr.SelectData):
                value = evt.value[0] if isinstance(evt.value, (list, tuple)) else evt.value
                return toggle_tag(activation_text, str(value))

            self.taginfo.select(
                fn=select_tag,
                inputs=[self.edit_activation_text],
                outputs=[self.edit_activation_text],
                show_progress=False,
            )
            self.create_default_buttons()
            viewed = [
                self.edit_name,
                self.edit_description,
                self.html_filedata,
                self.html_preview,
                self.edit_notes,
                self.select_sd_version,
                self.taginfo,
                self.edit_activation_text,
                self.slider_preferred_weight,
                self.edit_negative_text,
                self.edit_tags,
            ]
            self.button_edit.click(
                fn=self.put_values_into_components, inputs=[self.edit_name_input], outputs=viewed
            ).then(fn=lambda: gr.update(visible=True), inputs=[], outputs=[self.box])
            edited = [
                self.edit_description,
                self.select_sd_version,
                self.edit_activation_text,
                self.slider_preferred_weight,
                self.edit_negative_text,
                self.edit_notes,
                self.edit_tags,
            ]
            self.setup_save_handler(self.button_save, self.save_lora_user_metadata, edited)

    return LoraExtMetadataEditor()
