"""Card previews: preview file first, embedded ssmd_cover_images cover next, placeholder otherwise (USERS C2)."""

from __future__ import annotations

import base64
import io
import json

import torch
from PIL import Image
from safetensors.torch import save_file

from lora_ext.library import LoraLibrary
from lora_ext.ui.cards import PLACEHOLDER, card_data
from lora_ext.ui.previews import image_mime, library_preview_url


def png_bytes(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def write_lora(path, metadata=None) -> None:
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 32, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 2, 1, 1),
    }
    save_file(tensors, str(path), metadata=metadata or {})


def test_file_then_embedded_cover_then_placeholder(tmp_path):
    cover = png_bytes((0, 200, 0))
    write_lora(
        tmp_path / "covered.safetensors",
        {"ssmd_cover_images": json.dumps([base64.b64encode(cover).decode()])},
    )
    write_lora(
        tmp_path / "filed.safetensors", {"ssmd_cover_images": json.dumps([base64.b64encode(cover).decode()])}
    )
    (tmp_path / "filed.preview.png").write_bytes(png_bytes((200, 0, 0)))
    write_lora(tmp_path / "bare.safetensors")
    library = LoraLibrary([str(tmp_path)])
    library.refresh()
    cards = {
        c["name"]: c for c in card_data(library.entries(), preview_url=library_preview_url(library))["cards"]
    }

    assert f'src="file={tmp_path}/filed.preview.png"' in cards["filed"]["html"]
    src = cards["covered"]["html"].split('src="', 1)[1].split('"', 1)[0]
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == cover
    assert "lora-ext-placeholder" in cards["bare"]["html"]
    assert PLACEHOLDER.split(",")[0] in cards["bare"]["html"]


def test_image_mime_sniffing():
    assert image_mime(png_bytes("red")) == "image/png"
    assert image_mime(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert image_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_mime(b"<svg>") is None
