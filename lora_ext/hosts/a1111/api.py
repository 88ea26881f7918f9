"""HTTP routes (A1111_CONTRACT §12), registered in ``on_app_started``.

- ``GET /sdapi/v1/loras``: ``[{name, alias, path, metadata}]`` like the built-in (only when it is not active: it
  registers the same route itself).
- ``POST /sdapi/v1/refresh-loras``: rescan; returns ``null``.
- ``GET /lora_ext/v1/inspect?name=``: the coverage report against the loaded model and the metadata, or 404 with
  ``{"detail": "Lora not found: x (did you mean y?)..."}``.
- ``GET /lora_ext/preview?path=``: a card's preview, file or embedded cover, only through the library (the route of
  ``lora_ext.ui.app``; our tab uses it for embedded covers, which the webui's thumbnail route cannot serve).
"""

from __future__ import annotations

from typing import Any

from lora_ext.hosts.a1111.host import inspect_entry


def list_loras(host: Any) -> list[dict[str, Any]]:
    return [
        {"name": e.name, "alias": e.alias, "path": e.path, "metadata": e.metadata}
        for e in host.library.entries()
    ]


def register_routes(host: Any, app: Any, builtin_is_active: bool) -> None:
    from fastapi import HTTPException

    if not builtin_is_active:

        @app.get("/sdapi/v1/loras")
        async def get_loras():
            return list_loras(host)

        @app.post("/sdapi/v1/refresh-loras")
        async def refresh_loras():
            host.refresh()
            return None

    from lora_ext.hosts.a1111.library import CurrentLibrary
    from lora_ext.ui.routes import add_preview_route

    add_preview_route(app, CurrentLibrary(host))

    @app.get("/lora_ext/v1/inspect")
    async def inspect(name: str):
        entry, problems = host.lookup(name)
        if entry is None:
            detail = problems[0].message if problems else f"Lora not found: {name}"
            raise HTTPException(status_code=404, detail=detail)
        result = inspect_entry(host, entry, name)
        result["notes"] = [p.message for p in problems]
        return result
