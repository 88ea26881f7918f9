"""Textual-inversion embeddings bundled in LoRA files: registered while their LoRA is active, then removed.

A1111_CONTRACT §9.2 (``model_hijack.embedding_db``) and §11 (``lora_bundled_ti_to_infotext``). An embedding with the
name of one loaded from the embeddings folder is skipped (the folder wins, like the built-in).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lora_ext.adapters import ResolvedLora


def register(state: Any, sd_model: Any, active: Sequence[ResolvedLora]) -> list[str]:
    """Make the embedding DB hold exactly the bundled embeddings of ``active`` that this host registered.

    Returns one line per bundled embedding the webui could not build (its LoRA still applies): an exception here
    would make the activation fail, which drops every LoRA of the batch (A1111_CONTRACT §3.4).
    """
    wanted = {token: (lora, data) for lora in active for token, data in lora.embeddings.items()}
    if not wanted and not state.embeddings:
        return []
    from modules import sd_hijack, shared
    from modules.textual_inversion import textual_inversion

    db = sd_hijack.model_hijack.embedding_db
    # unchanged set, still in the DB (the webui clears it when it reloads its embeddings folder)
    if set(wanted) == set(state.embeddings) and all(t in db.word_embeddings for t in state.embeddings):
        return []
    unregister(state, sd_model)
    problems: list[str] = []
    for token, (lora, data) in wanted.items():
        if token in db.word_embeddings:
            continue  # loaded from the embeddings folder: that one wins
        try:
            embedding = textual_inversion.create_embedding_from_data(
                webui_embedding_data(data), token, filename=f"{lora.path}/{token}"
            )
        except Exception as exc:  # the webui's own checks (asserts, "Couldn't identify ...")
            problems.append(
                f"{lora.name}: its bundled embedding {token!r} was not loaded ({exc or type(exc).__name__}); "
                "the LoRA itself is applied."
            )
            continue
        embedding.loaded = True
        embedding.lora_ext_bundled = True  # ours: unregister never removes one from the embeddings folder
        embedding.shorthash = lora.name if getattr(shared.opts, "lora_bundled_ti_to_infotext", True) else None
        if db.expected_shape in (-1, None) or db.expected_shape == embedding.shape:
            db.register_embedding(embedding, sd_model)
            state.embeddings.append(token)
        else:
            db.skipped_embeddings[token] = embedding
    return problems


def webui_embedding_data(data: dict) -> dict:
    """The resolver's ``{"string_to_param": tensor}`` in the webui's form ``{"string_to_param": {"*": tensor}}``;
    SDXL ``{"clip_l", "clip_g"}`` unchanged."""
    param = data.get("string_to_param")
    if isinstance(param, torch.Tensor):
        return {"string_to_param": {"*": param}}
    return data


def unregister(state: Any, sd_model: Any) -> None:
    """Remove the embeddings this host registered for ``state``'s model."""
    if not state.embeddings:
        return
    from modules import sd_hijack

    db = sd_hijack.model_hijack.embedding_db
    for token in state.embeddings:
        if getattr(db.word_embeddings.get(token), "lora_ext_bundled", False):
            db.register_embedding_by_name(None, sd_model, token)
    state.embeddings.clear()
