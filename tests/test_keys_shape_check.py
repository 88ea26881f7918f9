"""Shape check of adapters against their target layers (wrong base model -> mismatches), GLoRA in both layouts."""

from __future__ import annotations

import pytest
import torch
from lycoris.modules.glora import GLoRAModule

from lora_ext.adapters import LayerAdapter, Target
from lora_ext.keys.shape_check import mismatch


def _target(module: torch.nn.Module) -> Target:
    return Target("unet", "x", "x", module=module)


def _glora_from_lycoris(module: torch.nn.Module) -> LayerAdapter:
    """New-layout GLoRA tensors exactly as lycoris-lora 4.x stores them for ``module``."""
    torch.manual_seed(0)
    state = GLoRAModule("x", module, 1.0, 4, 2.0).state_dict()
    parts = {
        k.removesuffix(".weight"): v for k, v in state.items() if k.endswith(".weight") and "org" not in k
    }
    return LayerAdapter("glora", parts, alpha=2.0)


@pytest.mark.parametrize(
    "module, other",
    [
        (torch.nn.Linear(16, 24), torch.nn.Linear(16, 32)),
        (torch.nn.Linear(16, 24), torch.nn.Linear(20, 24)),
        (torch.nn.Conv2d(8, 12, 3), torch.nn.Conv2d(8, 16, 3)),
        (torch.nn.Conv2d(8, 12, 3), torch.nn.Conv2d(6, 12, 3)),
    ],
)
def test_new_layout_glora_fits_its_layer_and_not_another(module, other):
    adapter = _glora_from_lycoris(module)
    assert mismatch(adapter, _target(module)) is None
    reason = mismatch(adapter, _target(other))
    assert reason is not None and reason.startswith("GLoRA")


def test_old_layout_glora_fits_its_layer_and_not_another():
    r, out, inp = 2, 12, 8 * 3 * 3  # old layout works on W flattened to [out, in*k*k]
    old = {
        "a1": torch.zeros(r, inp),
        "a2": torch.zeros(inp, r),
        "b1": torch.zeros(r, inp),
        "b2": torch.zeros(out, r),
    }
    adapter = LayerAdapter("glora", old, alpha=1.0)
    assert mismatch(adapter, _target(torch.nn.Conv2d(8, 12, 3))) is None
    assert mismatch(adapter, _target(torch.nn.Conv2d(8, 10, 3))) is not None  # other out channels
    assert mismatch(adapter, _target(torch.nn.Conv2d(4, 12, 3))) is not None  # other in channels


def test_incomplete_glora_is_reported():
    adapter = LayerAdapter("glora", {"a1": torch.zeros(16, 4)}, alpha=1.0)
    assert mismatch(adapter, _target(torch.nn.Linear(16, 24))) == "incomplete tensors"


def test_oft_blocks_of_the_wrong_rank_are_a_mismatch():
    layer = torch.nn.Linear(64, 64)
    flat_blocks = LayerAdapter("oft", {"oft_blocks": torch.zeros(8)}, alpha=1.0)  # 8 * 8 == 64 rows, but 1-D
    assert "OFT blocks" in mismatch(flat_blocks, _target(layer))
    assert (
        mismatch(LayerAdapter("oft", {"oft_blocks": torch.zeros(8, 8, 8)}, alpha=1.0), _target(layer)) is None
    )
