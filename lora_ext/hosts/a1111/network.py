"""The webui-facing classes, built at call time because their base classes live in ``modules``.

- ``make_extra_network(host)``: the ``lora`` extra network (A1111_CONTRACT §3.4), alias ``lyco``.
- ``make_script_class(host)``: the always-visible ``Script`` (§8.1) whose ``postprocess`` restores the weights at
  the end of every successful or interrupted generation, tags or not (§8.4). The script module keeps the returned
  class under its own name; the base class is never imported into it by name (§1.2).
"""

from __future__ import annotations

from typing import Any


def make_extra_network(host: Any) -> Any:
    from modules import extra_networks

    class ExtraNetworkLoraExt(extra_networks.ExtraNetwork):
        """``<lora:…>`` / ``<lyco:…>`` for the webui; every call delegates to the host."""

        def __init__(self) -> None:
            super().__init__("lora")

        def activate(self, p, params_list):
            host.activate(p, params_list)

        def deactivate(self, p):
            host.deactivate(p)

    return ExtraNetworkLoraExt()


def make_script_class(host: Any) -> type:
    from modules import scripts

    class LoraExtScript(scripts.Script):
        """Always-visible script: no UI; restores the model when a generation ends."""

        def title(self):
            return "lora_ext"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            return []

        def postprocess(self, p, processed, *args):
            host.restore_all()
            host.remember_image(processed)

    return LoraExtScript
