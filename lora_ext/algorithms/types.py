"""Value types shared by every algorithm family: the delta a family returns and the shape error it may raise."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class AdapterShapeError(ValueError):
    """An adapter's tensors cannot be applied to the given weight (shapes disagree and bridging cannot fix it).

    The message names the adapter's shapes and the weight's shape; the patcher turns it into a ``Problem``.
    """


@dataclass(frozen=True)
class LayerDelta:
    """The float32 update of one target at one multiplier.

    weight: ΔW with the shape of ``w0`` (float32, on ``w0``'s device), or None when the adapter only changes the bias.
    bias: Δb, 1-D ``[out]`` float32, or None. May be present when the layer has no bias yet (the patcher creates it).
    """

    weight: torch.Tensor | None
    bias: torch.Tensor | None = None


@dataclass(frozen=True)
class RawDelta:
    """What one algorithm family computes before the common steps (``bias`` part, DoRA, scale and multiplier).

    weight: ΔW_raw, float32, without s and m; any shape that ``shapes.fit_to_weight`` can bridge to ``w0``; or None.
    bias: Δb_raw, float32 ``[out]``, without m (s never applies to a bias delta, as in A1111); or None.
    scale: the family's own s (α/r, or 1 where no scale exists); a ``scale`` part overrides it.
    fixed_scale: True when a ``scale`` part must be ignored (OFT family: A1111 forces scale 1 there).
    """

    weight: torch.Tensor | None
    bias: torch.Tensor | None = None
    scale: float = 1.0
    fixed_scale: bool = False
