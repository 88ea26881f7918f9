"""Card previews: preview file first, embedded ssmd_cover_images cover next, placeholder otherwise (USERS C2)."""

from __future__ import annotations

import base64
import io
import json
import os

import torch
from PIL import Image
from safetensors.torch import save_file

from lora_ext.library import LoraLibrary
from lora_ext.ui.cards import PLACEHOLDER, card_data
from lora_ext.ui.previews import PREVIEW_ROUTE, image_mime, preview_payload, preview_route_url


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


def served(library):
    """A FastAPI app with only the card-preview route, and a client for it."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lora_ext.ui.routes import add_preview_route

    app = FastAPI()
    add_preview_route(app, library)
    return TestClient(app)


def test_file_then_embedded_cover_then_placeholder(tmp_path):
    cover = png_bytes((0, 200, 0))
    filed = png_bytes((200, 0, 0))
    write_lora(
        tmp_path / "covered.safetensors",
        {"ssmd_cover_images": json.dumps([base64.b64encode(cover).decode()])},
    )
    write_lora(
        tmp_path / "filed.safetensors", {"ssmd_cover_images": json.dumps([base64.b64encode(cover).decode()])}
    )
    (tmp_path / "filed.preview.png").write_bytes(filed)
    write_lora(tmp_path / "bare.safetensors")
    library = LoraLibrary([str(tmp_path)])
    library.refresh()
    cards = {c["name"]: c for c in card_data(library.entries(), preview_url=preview_route_url)["cards"]}
    client = served(library)

    def image(name):
        src = cards[name]["html"].split('src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        assert src.startswith(PREVIEW_ROUTE + "?")
        r = client.get("/" + src)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        return r.content

    assert image("filed") == filed  # the file beats the embedded cover
    assert image("covered") == cover
    assert "lora-ext-placeholder" in cards["bare"]["html"]
    assert PLACEHOLDER.split(",")[0] in cards["bare"]["html"]
    assert preview_payload(library, str(tmp_path / "bare.safetensors")).severity == "info"


def test_replaced_preview_gets_a_new_url(tmp_path):
    write_lora(tmp_path / "x.safetensors")
    (tmp_path / "x.png").write_bytes(png_bytes("red"))
    library = LoraLibrary([str(tmp_path)])
    library.refresh()
    before = preview_route_url(library.entries()[0])
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "x.png")
    os.utime(tmp_path / "x.png", ns=(1, 10**18))
    library.refresh()
    assert preview_route_url(library.entries()[0]) != before


def test_route_serves_nothing_outside_the_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(png_bytes("white"))
    write_lora(root / "linked.safetensors")
    os.symlink(secret, root / "linked.png")  # a preview link that leaves the root
    write_lora(outside / "foreign.safetensors")
    (outside / "foreign.png").write_bytes(png_bytes("black"))
    library = LoraLibrary([str(root)])
    library.refresh()
    client = served(library)

    for path in (
        str(secret),
        str(outside / "foreign.safetensors"),
        str(root / "linked.safetensors"),
        "/etc/passwd",
    ):
        r = client.get("/" + PREVIEW_ROUTE, params={"path": path})
        assert r.status_code == 404, (path, r.status_code)
        assert b"PNG" not in r.content
    entry = library.entries()[0]
    assert entry.preview is None or library.preview_file(entry) != str(secret)


def test_image_mime_sniffing():
    assert image_mime(png_bytes("red")) == "image/png"
    assert image_mime(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert image_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_mime(b"<svg>") is None


def test_replace_preview_writes_samples_format_and_says_when_another_file_still_wins(tmp_path):
    """C4 with the C2 order: "Replace preview" writes ``{name}.{samples_format}``; when the webui saves jpg and the
    LoRA already has ``name.png`` (Civitai Helper's download), the png is still the one shown, and the user is told
    which file to remove instead of seeing nothing happen (CH#265)."""
    from lora_ext.ui.previews import save_preview

    write_lora(tmp_path / "plain.safetensors")
    write_lora(tmp_path / "civ.safetensors")
    (tmp_path / "civ.png").write_bytes(png_bytes((0, 0, 200)))
    library = LoraLibrary([str(tmp_path)], cache_path=False)
    library.refresh()
    image = Image.new("RGBA", (8, 8), (10, 200, 10, 255))  # what a generation with transparency gives
    entries = {e.name: e for e in library.entries()}

    message = save_preview(library, entries["plain"], image, "jpg")
    assert isinstance(message, str) and "plain.jpg" in message and "still" not in message
    assert library.get(str(tmp_path / "plain.safetensors")).preview == str(tmp_path / "plain.jpg")

    message = save_preview(library, entries["civ"], image, "jpg")
    assert (tmp_path / "civ.jpg").is_file()
    assert "civ.png" in message and "still" in message
    assert (tmp_path / "civ.png").read_bytes() == png_bytes((0, 0, 200))  # the user's file is left alone
