"""The static markup of the card browser (controls, folder pane, grid); javascript/lora_ext.js fills it.

No Gradio here, so the browser tests can put the same markup into a blank page.
"""

from __future__ import annotations

import html

SORTS = [
    ("path", "Path"),
    ("name", "Name"),
    ("created", "Date created"),
    ("modified", "Date modified"),
    ("added", "Date added"),
    ("published", "Civitai published"),
    ("size", "Size"),
]
#: Descriptions on cards (USERS C5): off by default; "html" renders the user's HTML, sanitised by the browser.
DESCRIPTION_MODES = [("off", "No descriptions"), ("text", "Descriptions"), ("html", "Descriptions as HTML")]
ARCH_FILTERS = ["SD1", "SD2", "SDXL", "SD3", "Flux", "Other", "Unknown"]


def browser_html(prefix: str) -> str:
    """The static part of the browser; javascript/lora_ext.js fills the folder pane and the grid."""
    esc = html.escape
    sorts = "".join(f'<option value="{k}">{esc(label)}</option>' for k, label in SORTS)
    archs = "".join(f'<option value="{a}">{a}</option>' for a in ARCH_FILTERS)
    descs = "".join(f'<option value="{k}">{esc(label)}</option>' for k, label in DESCRIPTION_MODES)
    return (
        f'<div class="lora-ext-browser" data-prefix="{esc(prefix, quote=True)}">'
        '<div class="lora-ext-controls">'
        '<input class="lora-ext-search" type="search" placeholder="Search name, alias, folder, description, tags, hash…" '
        'aria-label="Search LoRAs">'
        f'<select class="lora-ext-sort" aria-label="Sort by">{sorts}</select>'
        '<button class="lora-ext-order" title="Ascending / descending">↑</button>'
        f'<select class="lora-ext-arch" aria-label="Architecture"><option value="all">All architectures</option>'
        f"{archs}</select>"
        '<select class="lora-ext-tagfilter" aria-label="Tag" '
        'title="Only LoRAs with this tag: your own (set in the inspector) or one it was trained with">'
        '<option value="">All tags</option></select>'
        '<label class="lora-ext-favlabel"><input type="checkbox" class="lora-ext-favonly"> ★ only</label>'
        f'<select class="lora-ext-descmode" aria-label="Descriptions on cards">{descs}</select>'
        '<span class="lora-ext-pager"><button class="lora-ext-prev" title="Previous page">‹</button>'
        '<span class="lora-ext-pageinfo"></span><button class="lora-ext-next" title="Next page">›</button></span>'
        "</div>"
        '<div class="lora-ext-body"><div class="lora-ext-folders"></div><div class="lora-ext-grid"></div></div>'
        "</div>"
    )
