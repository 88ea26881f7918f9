"""Our LoRA tab inside the webui (``on_ui_tabs``): ``lora_ext.ui.build_lora_tab`` fed by the host, plus the notice
and the "disable the built-in" button while the built-in Lora extension is active."""

from __future__ import annotations

import urllib.parse
from typing import Any

from lora_ext.hosts.a1111 import builtin
from lora_ext.hosts.a1111.model import model_architecture
from lora_ext.library import EMBEDDED_PREVIEW


def preview_url(entry: Any) -> str | None:
    """The webui's own thumbnail route (§12 ``/sd_extra_networks/thumb``) for preview files; embedded covers
    (``ssmd_cover_images``) through our preview route (``lora_ext.ui.previews``, registered by ``api``)."""
    if not entry.preview:
        return None
    if entry.preview.startswith(EMBEDDED_PREVIEW):
        from lora_ext.ui.previews import preview_route_url

        return preview_route_url(entry)
    quoted = urllib.parse.quote(entry.preview.replace("\\", "/"))
    return f"./sd_extra_networks/thumb?filename={quoted}&mtime={int(entry.mtime)}"


def tab_host(host: Any) -> Any:
    from modules import shared

    from lora_ext.hosts.a1111.library import CurrentLibrary
    from lora_ext.ui.tab import TabHost

    def coverage(entry: Any) -> str | None:
        report = host.inspect(entry)
        return report.get("summary") if isinstance(report, dict) else None

    return TabHost(
        library=CurrentLibrary(host),
        model_arch=lambda: model_architecture(shared.sd_model) if shared.sd_model is not None else None,
        default_multiplier=lambda: float(shared.opts.extra_networks_default_multiplier),
        preferred_name=lambda: (
            "filename" if getattr(shared.opts, "lora_preferred_name", "") == "Filename" else "alias"
        ),
        coverage=coverage,
        last_image=lambda: host.last_image,
        preview_url=preview_url,
        samples_format=str(getattr(shared.opts, "samples_format", "png")),
    )


def ui_tabs(host: Any, builtin_is_active: bool) -> list:
    import gradio as gr

    from lora_ext.ui.tab import build_lora_tab

    with gr.Blocks(analytics_enabled=False) as block:
        if builtin_is_active:
            gr.Markdown(builtin.DISABLE_HINT, elem_id="lora_ext_builtin_notice")
            button = gr.Button("Disable the built-in Lora extension (takes effect after restart)")
            status = gr.Markdown()
            button.click(fn=builtin.disable_builtin, inputs=[], outputs=[status])
        build_lora_tab(tab_host(host))
    return [(block, "LoRA", "lora_ext_tab")]
