"""Shape bridging between an adapter's natural delta shape and the target weight (FORMATS.md §9.1, §10.10).

Two bridges exist: SD2-style conv↔linear ``proj_in``/``proj_out`` (``[out, in]`` ↔ ``[out, in, 1, 1]``: same shape after
dropping trailing singleton axes) and inpainting UNets whose ``conv_in`` has more input channels than the LoRA was
trained for (the delta is zero-padded on the extra input channels, placed at channels ``[0, in_delta)``).
"""

from __future__ import annotations

import torch

from lora_ext.algorithms.types import AdapterShapeError


def _core(shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    dims = list(shape)
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


def fit_to_weight(delta: torch.Tensor, shape: torch.Size, what: str = "adapter") -> torch.Tensor:
    """Return ``delta`` with exactly ``shape``, bridging conv↔linear and zero-padding input channels.

    delta: float32 ΔW in the adapter's natural shape. shape: the target weight's shape.
    Raises AdapterShapeError naming both shapes when no bridge applies.
    """
    if tuple(delta.shape) == tuple(shape):
        return delta
    if _core(delta.shape) == _core(shape):
        return delta.reshape(shape)
    if delta.dim() == 4 and len(shape) == 4:
        out, cin, kh, kw = delta.shape
        if out == shape[0] and (kh, kw) == tuple(shape[2:]) and cin < shape[1]:
            padded = delta.new_zeros(shape)
            padded[:, :cin] = delta
            return padded
    raise AdapterShapeError(
        f"{what} produces a weight update of shape {list(delta.shape)}, "
        f"which cannot be applied to a weight of shape {list(shape)}"
    )


def unflatten_like(flat: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reshape a ``[out, in·kh·kw]`` float32 delta (LoHa, LoKr, GLoRA products) towards a weight ``shape``.

    For a 4-D target the columns are split as ``[in', kh, kw]`` whenever they divide by the kernel size, so that a
    delta with fewer input channels still reaches the inpainting zero-pad in ``fit_to_weight``.
    """
    if flat.dim() != 2:
        return flat
    if len(shape) == 4 and flat.shape[0] == shape[0]:
        kernel = shape[2] * shape[3]
        if flat.shape[1] % kernel == 0:
            return flat.reshape(flat.shape[0], flat.shape[1] // kernel, shape[2], shape[3])
    if flat.numel() == torch.Size(shape).numel() and flat.shape[0] == shape[0]:
        return flat.reshape(shape)
    return flat


def fit_bias(delta: torch.Tensor, shape: torch.Size | None, what: str = "adapter") -> torch.Tensor:
    """Check a bias delta against the layer's bias shape (``None``: the layer has no bias yet; only 1-D is allowed)."""
    if shape is None:
        if delta.dim() != 1:
            raise AdapterShapeError(
                f"{what} has a bias update of shape {list(delta.shape)}; a bias must be 1-D"
            )
        return delta
    if delta.numel() != torch.Size(shape).numel():
        raise AdapterShapeError(
            f"{what} has a bias update of shape {list(delta.shape)}, but the layer's bias has shape {list(shape)}"
        )
    return delta.reshape(shape)
