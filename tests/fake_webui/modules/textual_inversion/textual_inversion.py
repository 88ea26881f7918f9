"""Fake ``modules.textual_inversion.textual_inversion`` (A1111_CONTRACT.md §9.2: bundled embeddings)."""

from __future__ import annotations

import torch


class Embedding:
    def __init__(self, vec, name, step=None):
        self.vec = vec
        self.name = name
        self.step = step
        self.shape = None
        self.vectors = 0
        self.loaded = None
        self.shorthash = None
        self.filename = None

    def __repr__(self):
        return f"Embedding({self.name!r})"


def create_embedding_from_data(data, name, filename="unknown embedding file", filepath=None):
    """Like the webui: ``{"string_to_param": {token: tensor}}`` (exactly one entry), SDXL ``{"clip_g", "clip_l"}``
    (both required), or a diffusers concept ``{token: tensor}`` (exactly one entry, else AssertionError); anything
    else raises."""
    if "string_to_param" in data:
        param_dict = data["string_to_param"]
        assert len(param_dict) == 1, "embedding file has multiple terms in it"
        vec = next(iter(param_dict.items()))[1].detach().to(torch.float32)
        shape = vec.shape[-1]
        vectors = vec.shape[0]
    elif isinstance(data, dict) and "clip_g" in data and "clip_l" in data:
        vec = {k: v.detach().to(torch.float32) for k, v in data.items()}
        shape = data["clip_g"].shape[-1] + data["clip_l"].shape[-1]
        vectors = data["clip_g"].shape[0]
    elif isinstance(data, dict) and isinstance(next(iter(data.values()), None), torch.Tensor):
        assert len(data.keys()) == 1, "embedding file has multiple terms in it"
        emb = next(iter(data.values()))
        if len(emb.shape) == 1:
            emb = emb.unsqueeze(0)
        vec = emb.detach().to(torch.float32)
        shape = vec.shape[-1]
        vectors = vec.shape[0]
    else:
        raise Exception(
            f"Couldn't identify {filename} as neither textual inversion embedding nor diffuser concept."
        )
    embedding = Embedding(vec, name)
    embedding.shape = shape
    embedding.vectors = vectors
    embedding.filename = filename
    return embedding


class EmbeddingDatabase:
    def __init__(self):
        self.word_embeddings = {}
        self.skipped_embeddings = {}
        self.expected_shape = -1

    def register_embedding(self, embedding, model):
        return self.register_embedding_by_name(embedding, model, embedding.name)

    def register_embedding_by_name(self, embedding, model, name):
        if embedding is None:
            self.word_embeddings.pop(name, None)
            return None
        self.word_embeddings[name] = embedding
        return embedding
