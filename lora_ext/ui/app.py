"""The standalone app: prompt, negative prompt, generate button, gallery and the LoRA tab, on a diffusers host.

``build_app(runtime)`` returns a Gradio Blocks; ``python -m lora_ext app`` launches it on 127.0.0.1.
The prompt boxes use the ids ``lora_ext_app_prompt`` / ``lora_ext_app_neg_prompt`` (javascript/lora_ext.js also
knows A1111's ``txt2img_prompt`` / ``txt2img_neg_prompt``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import gradio as gr

from lora_ext.errors import is_problem
from lora_ext.ui.previews import preview_route_url
from lora_ext.ui.routes import add_preview_route
from lora_ext.ui.runtime import Runtime, generate
from lora_ext.ui.tab import TabHost, build_lora_tab

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PREFIX = "lora_ext_app"
HIDDEN_CSS = ".lora-ext-hidden { display: none !important; }\n"


def extension_css() -> str:
    """style.css of the extension (what A1111 loads from the extension root) plus the hidden-element rule."""
    path = REPO_ROOT / "style.css"
    return HIDDEN_CSS + (path.read_text(encoding="utf-8") if path.exists() else "")


def extension_js() -> str:
    """All javascript/*.js of the extension in A1111's (alphabetical) order."""
    folder = REPO_ROOT / "javascript"
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.js")))


def _gradio_major() -> int:
    return int(gr.__version__.split(".")[0])


def inject_script_js(source: str) -> str:
    """A JS function (for a Gradio load event) that adds ``source`` as a classic <script> once."""
    return (
        "() => { if (!document.getElementById('lora-ext-script')) {"
        " const s = document.createElement('script'); s.id = 'lora-ext-script';"
        f" s.textContent = {json.dumps(source)}; document.head.appendChild(s); }} }}"
    )


def coverage_for(runtime: Runtime):
    """entry -> one-line coverage summary of that LoRA against the app's model (for the inspector)."""

    def summary(entry) -> str | None:
        resolved = runtime.host.loader.resolve(entry.path, runtime.host.parts, entry.name)
        if is_problem(resolved):
            return str(resolved)
        report = resolved.report
        return report.summary() if hasattr(report, "summary") else None

    return summary


def info_html(lines: list[str]) -> str:
    """The generation info box: one escaped line per coverage report or problem; error and warning lines (those
    starting with ``error:`` / ``warning:``) are marked so the theme shows them in its error colour."""
    out = []
    for line in lines:
        cls = "lora-ext-problem" if line.startswith(("error:", "warning:")) else "lora-ext-infoline"
        out.append(f'<div class="{cls}">{html.escape(line)}</div>')
    return '<div class="lora-ext-geninfo">' + "".join(out) + "</div>"


def build_app(runtime: Runtime, prefix: str = "lora_ext", prompt_prefix: str = APP_PREFIX) -> Any:
    """The app's Blocks. ``prompt_prefix`` names the prompt ids (``txt2img`` gives an A1111-like page)."""
    last: dict[str, Any] = {"image": None}
    settings: dict[str, Any] = {"multiplier": 1.0, "name": "alias"}
    host = TabHost(
        library=runtime.library,
        model_arch=lambda: runtime.host.architecture,
        default_multiplier=lambda: settings["multiplier"],
        preferred_name=lambda: settings["name"],
        coverage=coverage_for(runtime),
        last_image=lambda: last["image"],
        preview_url=preview_route_url,
    )
    defaults = runtime.defaults
    js = inject_script_js(extension_js())
    # System fonts only: the default theme fetches Google fonts, which an offline machine cannot reach.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    kwargs: dict[str, Any] = {
        "title": "lora_ext",
        "css": extension_css(),
        "analytics_enabled": False,
        "theme": theme,
    }
    if _gradio_major() >= 4:
        kwargs["head"] = "<script>" + extension_js().replace("</", "<\\/") + "</script>"

    def run(prompt: str, negative: str, seed: float, steps: float, progress=gr.Progress()):  # noqa: B008
        progress(0, desc="Applying LoRAs")

        def on_step(step: int, total: int) -> None:
            progress((step, total), desc="Generating", unit="steps")

        gen = generate(
            runtime, prompt or "", negative or "", seed=int(seed or 0), steps=int(steps), on_step=on_step
        )
        last["image"] = gen.images[0]
        progress(1, desc="Done")
        lines = gen.applied.info_lines() or ["No LoRA tag in the prompt."]
        if gen.applied.active:
            count = len(gen.applied.active)
            lines.insert(
                0,
                f"Applied {count} LoRA{'s' if count > 1 else ''} for this image, then restored the model weights:",
            )
        return gen.images, info_html(lines)

    with gr.Blocks(**kwargs) as demo:
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{prompt_prefix}_prompt")
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prompt_prefix}_neg_prompt")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, elem_id=f"{prompt_prefix}_seed")
                    steps = gr.Slider(1, 50, value=defaults["steps"], step=1, label="Steps")
                button = gr.Button("Generate", variant="primary", elem_id=f"{prompt_prefix}_generate")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Result", elem_id=f"{prompt_prefix}_gallery")
                info = gr.HTML("", elem_id=f"{prompt_prefix}_info")
        with gr.Tabs():
            with gr.Tab("LoRA", elem_id=f"{prefix}_tabitem"):
                with gr.Accordion("Card settings", open=False, elem_id=f"{prompt_prefix}_settings"):
                    with gr.Row():
                        multiplier = gr.Number(
                            value=1.0,
                            label="Default weight (LoRAs without a preferred weight; negative allowed)",
                        )
                        name_choice = gr.Radio(
                            ["Alias from file", "Filename"], value="Alias from file", label="Refer to LoRA by"
                        )
                tab = build_lora_tab(host, prefix)

        def set_settings(value: float, choice: str) -> str:
            settings["multiplier"] = float(value) if value is not None else 1.0
            settings["name"] = "filename" if choice == "Filename" else "alias"
            return tab.render()

        multiplier.change(set_settings, inputs=[multiplier, name_choice], outputs=[tab.data], queue=False)
        name_choice.change(set_settings, inputs=[multiplier, name_choice], outputs=[tab.data], queue=False)
        # The info box is filled in a second step so only the gallery carries the progress bar.
        info_text = gr.State("")
        button.click(run, inputs=[prompt, negative, seed, steps], outputs=[gallery, info_text]).then(
            lambda text: text,
            inputs=[info_text],
            outputs=[info],
            show_progress="hidden" if _gradio_major() >= 4 else False,
        )
        if _gradio_major() < 4:
            demo.load(None, None, None, _js=js)
    # One worker: events finish in the order they were sent. The tab's quick events (inspect, favourite, model
    # check, card settings) bypass the queue, so they do not wait for a running generation.
    demo.queue()
    return demo


def launch_app(runtime: Runtime, host: str = "127.0.0.1", port: int = 7861, block: bool = True) -> Any:
    """Build and serve the app; with ``block`` False the server runs in a thread and the Blocks is returned
    (``.close()`` stops it). Card previews come from the app's own route (``add_preview_route``); Gradio's
    ``/file=`` route is not opened to the LoRA folders, and the working folder is blocked for it."""
    demo = build_app(runtime)
    demo.launch(
        server_name=host,
        server_port=port,
        blocked_paths=[str(Path.cwd())] if not _temp_dir_inside(Path.cwd()) else [],
        show_api=False,
        prevent_thread_lock=True,
        quiet=True,
    )
    add_preview_route(demo.server_app, runtime.library)
    if block:
        demo.block_thread()
    return demo


def _temp_dir_inside(folder: Path) -> bool:
    """Whether Gradio's temporary folder (gallery images) lies inside ``folder`` (blocking it would hide them)."""
    import os
    import tempfile

    temp = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    return temp == folder.resolve() or folder.resolve() in temp.parents
