"""Pure tensor math: one ``LayerAdapter`` + the pristine weight → float32 delta (FORMATS.md §9–§10).

Public API: ``layer_delta``, ``LayerDelta``, ``AdapterShapeError``, ``ALGORITHM_NAMES``, ``delta_is_w_dependent``.
One module per algorithm family; ``registry`` maps ``LayerAdapter.algo`` to the family.
"""

from lora_ext.algorithms.delta import delta_is_w_dependent, layer_delta
from lora_ext.algorithms.registry import FAMILIES
from lora_ext.algorithms.types import AdapterShapeError, LayerDelta

#: Algorithm names ``layer_delta`` accepts.
ALGORITHM_NAMES: tuple[str, ...] = tuple(FAMILIES)

__all__ = ["ALGORITHM_NAMES", "AdapterShapeError", "LayerDelta", "delta_is_w_dependent", "layer_delta"]
