"""Generated LoRA trees for the library tests: real safetensors files (tiny tensors, realistic kohya/LyCORIS/PEFT
headers and metadata) written with the ``safetensors`` package, sidecars and previews as the webui and Civitai
Helper write them. The helpers are imported by the other ``test_library_*`` files; the tests here check that the
generated files are what they claim to be (read back by ``safetensors`` itself).
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

# A 1x1 PNG (valid file), used as preview and as an embedded cover.
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _lora(prefix: str, in_dim: int, out_dim: int, rank: int, rng, alpha: float | None = 1.0) -> dict:
    tensors = {
        f"{prefix}.lora_down.weight": rng.standard_normal((rank, in_dim)).astype(np.float16),
        f"{prefix}.lora_up.weight": rng.standard_normal((out_dim, rank)).astype(np.float16),
    }
    if alpha is not None:
        tensors[f"{prefix}.alpha"] = np.array(alpha, dtype=np.float16)
    return tensors


def kohya_tensors(
    kind: str, seed: int = 0, rank: int = 4, alpha: float | None = 2.0
) -> dict[str, np.ndarray]:
    """Tiny tensors with real key names and the shapes that identify an architecture.

    kind: "sd1" (cross-attention input 768), "sd2" (1024), "sdxl" (te2 + input 2048, transformer depth > 1),
    "flux" (double blocks), "loha", "lokr", "peft" (diffusers PEFT names, SD1 shapes), "plain" (says nothing).
    """
    rng = np.random.default_rng(seed)
    block = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0"
    if kind == "sd1":
        return {
            **_lora(f"{block}_attn2_to_k", 768, 320, rank, rng, alpha),
            **_lora(f"{block}_attn1_to_q", 320, 320, rank, rng, alpha),
            **_lora("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768, rank, rng, alpha),
        }
    if kind == "sd2":
        return {
            **_lora(f"{block}_attn2_to_k", 1024, 320, rank, rng, alpha),
            **_lora("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 1024, 1024, rank, rng, alpha),
        }
    if kind == "sdxl":
        return {
            **_lora(
                "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k", 2048, 640, rank, rng, alpha
            ),
            **_lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768, rank, rng, alpha),
            **_lora("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280, 1280, rank, rng, alpha),
        }
    if kind == "flux":
        return {
            **_lora("lora_unet_double_blocks_0_img_attn_qkv", 64, 192, rank, rng, alpha),
            **_lora("lora_unet_single_blocks_0_linear1", 64, 64, rank, rng, alpha),
        }
    if kind == "loha":
        prefix = f"{block}_attn1_to_q"
        return {
            f"{prefix}.hada_w1_a": rng.standard_normal((320, rank)).astype(np.float16),
            f"{prefix}.hada_w1_b": rng.standard_normal((rank, 320)).astype(np.float16),
            f"{prefix}.hada_w2_a": rng.standard_normal((320, rank)).astype(np.float16),
            f"{prefix}.hada_w2_b": rng.standard_normal((rank, 320)).astype(np.float16),
            f"{prefix}.alpha": np.array(alpha if alpha is not None else rank, dtype=np.float16),
        }
    if kind == "lokr":
        prefix = f"{block}_attn1_to_q"
        return {
            f"{prefix}.lokr_w1": rng.standard_normal((4, 4)).astype(np.float32),
            f"{prefix}.lokr_w2_a": rng.standard_normal((80, rank)).astype(np.float32),
            f"{prefix}.lokr_w2_b": rng.standard_normal((rank, 80)).astype(np.float32),
            f"{prefix}.alpha": np.array(alpha if alpha is not None else rank, dtype=np.float32),
        }
    if kind == "peft":
        path = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
        return {
            f"{path}.lora_A.weight": rng.standard_normal((rank, 768)).astype(np.float32),
            f"{path}.lora_B.weight": rng.standard_normal((320, rank)).astype(np.float32),
        }
    if kind == "plain":
        return _lora("lora_unet_custom_layer", 8, 8, rank, rng, alpha)
    raise ValueError(kind)


def write_lora(
    path: Path,
    kind: str = "sd1",
    metadata: dict | None = None,
    seed: int = 0,
    covers: list[bytes] | None = None,
) -> Path:
    """Write one safetensors LoRA; ``covers`` become AddNet's ``ssmd_cover_images`` (JSON list of base64)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    if covers:
        meta["ssmd_cover_images"] = json.dumps([base64.b64encode(c).decode() for c in covers])
    save_file(kohya_tensors(kind, seed), str(path), metadata=meta or None)
    return path


def header_length(path: Path) -> int:
    """N, the little-endian u64 at the start of a safetensors file."""
    with open(path, "rb") as handle:
        return struct.unpack("<Q", handle.read(8))[0]


def build_tree(base: Path) -> dict[str, Path]:
    """A realistic library under ``base/Lora`` and ``base/LyCORIS``; returns named paths for the tests.

    Layout (see the names test for what each resolves to):
      Lora/style_a.safetensors        SD1, alias "StyleAlias", json + both preview spellings + .txt
      Lora/chars/hero.safetensors     SDXL, alias "hero_v2"          (bare "hero" also in other/ and chars/old/)
      Lora/chars/old/hero.safetensors SD1
      Lora/other/hero.safetensors     SD1
      Lora/chars/Villain.safetensors  SD1
      Lora/x/shared1.safetensors, Lora/y/shared2.safetensors   both alias "shared" (clash)
      Lora/z/impostor.safetensors     alias "style_a" (clashes with a filename: the filename wins)
      Lora/pony/pony_char.safetensors keys say nothing; civitai.info baseModel "Pony" + CHz json "Unknown"
      Lora/covers/covered.safetensors embedded cover, no preview file
      Lora/model.v2.final.safetensors dots in the name
      Lora/.hidden/secret.safetensors hidden folder
      Lora/legacy.pt                  torch pickle (listed, no header)
      LyCORIS/loha_thing.safetensors  LoHa, sshs_model_hash embedded
    """
    lora, lyco = base / "Lora", base / "LyCORIS"
    paths = {
        "style_a": write_lora(
            lora / "style_a.safetensors",
            "sd1",
            {"ss_output_name": "StyleAlias", "ss_base_model_version": "sd_v1", "ss_network_alpha": "2.0"},
            seed=1,
        ),
        "hero": write_lora(
            lora / "chars" / "hero.safetensors",
            "sdxl",
            {"ss_output_name": "hero_v2", "ss_network_dim": "4"},
            seed=2,
        ),
        "hero_old": write_lora(lora / "chars" / "old" / "hero.safetensors", "sd1", seed=3),
        "hero_other": write_lora(lora / "other" / "hero.safetensors", "sd1", seed=4),
        "villain": write_lora(lora / "chars" / "Villain.safetensors", "sd1", seed=5),
        "shared1": write_lora(
            lora / "x" / "shared1.safetensors", "sd1", {"ss_output_name": "shared"}, seed=6
        ),
        "shared2": write_lora(
            lora / "y" / "shared2.safetensors", "sd1", {"ss_output_name": "shared"}, seed=7
        ),
        "impostor": write_lora(
            lora / "z" / "impostor.safetensors", "sd1", {"ss_output_name": "style_a"}, seed=8
        ),
        "pony": write_lora(lora / "pony" / "pony_char.safetensors", "plain", seed=9),
        "covered": write_lora(lora / "covers" / "covered.safetensors", "sd1", seed=10, covers=[PNG_1PX]),
        "dotted": write_lora(lora / "model.v2.final.safetensors", "sd1", seed=11),
        "secret": write_lora(lora / ".hidden" / "secret.safetensors", "sd1", seed=12),
        "loha": write_lora(
            lyco / "loha_thing.safetensors",
            "loha",
            {"ss_network_module": "lycoris.kohya", "sshs_model_hash": "ab" * 32},
            seed=13,
        ),
    }
    legacy = lora / "legacy.pt"
    import torch

    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(2, 4)}, legacy)
    paths["legacy"] = legacy
    (lora / "style_a.json").write_text(
        json.dumps(
            {
                "description": "json description",
                "sd version": "SD1",
                "activation text": "style a, painterly",
                "preferred weight": 0.8,
                "negative text": "blurry",
                "notes": "n",
                "x-other-tool": {"keep": True},
            }
        ),
        encoding="utf-8",
    )
    (lora / "style_a.txt").write_text("txt description", encoding="utf-8")
    (lora / "style_a.preview.png").write_bytes(PNG_1PX)
    (lora / "style_a.png").write_bytes(PNG_1PX)
    (lora / "chars" / "hero.preview.png").write_bytes(PNG_1PX)
    (lora / "chars" / "hero.jpg").write_bytes(PNG_1PX)
    (lora / "pony" / "pony_char.json").write_text(
        json.dumps({"sd version": "Unknown", "preferred weight": 0, "activation text": ""}), encoding="utf-8"
    )
    (lora / "pony" / "pony_char.civitai.info").write_text(
        json.dumps(
            {
                "id": 456,
                "modelId": 123,
                "baseModel": "Pony",
                "trainedWords": ["pony_char", " score_9 "],
                "description": "<p>civitai text</p>",
            }
        ),
        encoding="utf-8",
    )
    (lora / "covers" / "covered.description.txt").write_text("from description.txt\n", encoding="utf-8")
    return paths


def test_generated_files_are_real_safetensors(tmp_path):
    paths = build_tree(tmp_path)
    with safe_open(str(paths["style_a"]), "np") as handle:
        assert handle.metadata()["ss_output_name"] == "StyleAlias"
        keys = list(handle.keys())
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight" in keys
        assert handle.get_tensor(keys[0]).dtype == np.float16
    with safe_open(str(paths["covered"]), "np") as handle:
        covers = json.loads(handle.metadata()["ssmd_cover_images"])
        assert base64.b64decode(covers[0]) == PNG_1PX
    size = os.path.getsize(paths["hero"])
    assert 8 + header_length(paths["hero"]) < size < 64 * 1024  # tiny, with tensor data after the header
