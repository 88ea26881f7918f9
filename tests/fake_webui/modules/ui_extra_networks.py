"""Fake ``modules.ui_extra_networks`` (A1111_CONTRACT.md §4).

Reproduces: page identity (§4.1), the reusable helpers and their outputs (§4.2), the item-dict consumers
``create_item_html`` / ``create_html`` (§4.3, reduced to the fields they read), and the route functions that call
``create_item(name, enable_filter=False)`` and look pages up by ``page.name`` (§4.1 trap, §12).
"""

from __future__ import annotations

import html
import json
import os
import urllib.parse
from base64 import b64decode
from io import BytesIO

from PIL import Image

from modules import errors, extra_networks, shared, util

extra_pages: list = []
allowed_dirs: set = set()
default_allowed_preview_extensions = ["png", "jpg", "jpeg", "webp", "gif"]


def allowed_preview_extensions():
    return (*default_allowed_preview_extensions, shared.opts.samples_format)


def register_page(page):
    """§4.1: appends and recomputes ``allowed_dirs``."""
    extra_pages.append(page)
    allowed_dirs.clear()
    allowed_dirs.update(set(sum([x.allowed_directories_for_previews() for x in extra_pages], [])))


def initialize():
    extra_pages.clear()


def register_default_pages():
    """§2 step 4: the webui registers TI / hypernetwork / checkpoint pages; not needed by the fake."""


def quote_js(s):
    """§4.2: escapes backslash and double quote, wraps in double quotes; newlines are NOT escaped."""
    s = s.replace("\\", "\\\\")
    s = s.replace('"', '\\"')
    return f'"{s}"'


def fetch_file(filename: str = ""):
    """§12 ``/sd_extra_networks/thumb``: only files under an allowed dir with a preview extension."""
    if not any(os.path.abspath(filename).startswith(os.path.abspath(d) + os.sep) for d in allowed_dirs):
        raise ValueError(
            f"File cannot be fetched: {filename}. Must be in one of directories registered by extra pages."
        )
    ext = os.path.splitext(filename)[1].lower()[1:]
    if ext not in allowed_preview_extensions():
        raise ValueError(
            f"File cannot be fetched: {filename}. Extensions allowed: {allowed_preview_extensions()}."
        )
    return filename


def fetch_cover_images(page: str = "", item: str = "", index: int = 0):
    """§12 ``/sd_extra_networks/cover-images``: decodes entry ``index`` of the item's ``ssmd_cover_images`` (a JSON
    string of base64 images) and returns ``(bytes, mime type)``; None where the real route answers 404."""
    page = next(iter([x for x in extra_pages if x.name == page]), None)
    metadata = None if page is None else page.metadata.get(item)
    if metadata is None:
        return None
    covers = json.loads(metadata.get("ssmd_cover_images", "[]"))
    image = covers[index] if index < len(covers) else None
    if not image:
        return None
    with Image.open(BytesIO(b64decode(image))) as img:
        buffer = BytesIO()
        img.save(buffer, format=img.format)
        return buffer.getvalue(), img.get_format_mimetype()


def get_metadata(page: str = "", item: str = ""):
    """§12 ``/sd_extra_networks/metadata``: looks the page up by ``page.name``; drops ``ssmd_cover_images``."""
    page = next(iter([x for x in extra_pages if x.name == page]), None)
    if page is None:
        return {"metadata": None}
    metadata = page.metadata.get(item)
    if metadata is None:
        return {"metadata": None}
    metadata = {i: metadata[i] for i in metadata if i != "ssmd_cover_images"}
    return {"metadata": json.dumps(metadata, indent=4, ensure_ascii=False)}


def get_single_card(page: str = "", tabname: str = "", name: str = ""):
    """§4.2/§12 ``/sd_extra_networks/get-single-card``: ``create_item(name, enable_filter=False)``."""
    page = next(iter([x for x in extra_pages if x.name == page]), None)
    try:
        item = page.create_item(name, enable_filter=False)
        page.items[name] = item
    except Exception as e:
        errors.display(e, "creating item for extra network")
        item = page.items.get(name)
    page.read_user_metadata(item, use_cache=False)
    item_html = page.create_item_html(tabname, item, shared.html("extra-networks-card.html"))
    return {"html": item_html}


class ExtraNetworksPage:
    """§4.1/§4.2 base page."""

    def __init__(self, title):
        self.title = title
        self.name = title.lower()
        self.extra_networks_tabname = self.name.replace(" ", "_")
        self.allow_prompt = True
        self.allow_negative_prompt = False
        self.metadata = {}
        self.items = {}
        self.lister = util.MassFileLister()
        self.pane_tpl = shared.html("extra-networks-pane.html")
        self.card_tpl = shared.html("extra-networks-card.html")

    def refresh(self):
        pass

    def read_user_metadata(self, item, use_cache=True):
        filename = item.get("filename", None)
        metadata = extra_networks.get_user_metadata(filename, lister=self.lister if use_cache else None)
        desc = metadata.get("description", None)
        if desc is not None:
            item["description"] = desc
        item["user_metadata"] = metadata

    def link_preview(self, filename):
        quoted_filename = urllib.parse.quote(filename.replace("\\", "/"))
        mtime, _ = self.lister.mctime(filename)
        return f"./sd_extra_networks/thumb?filename={quoted_filename}&mtime={mtime}"

    def search_terms_from_path(self, filename, possible_directories=None):
        abspath = os.path.abspath(filename)
        for parentdir in (
            possible_directories
            if possible_directories is not None
            else self.allowed_directories_for_previews()
        ):
            parentdir = os.path.dirname(os.path.abspath(parentdir))
            if abspath.startswith(parentdir):
                return os.path.relpath(abspath, parentdir)
        return ""

    def create_item_html(self, tabname, item, template=None):
        """§4.3: the default click handler splices ``prompt``/``negative_prompt`` as JS expressions."""
        onclick = item.get("onclick", None)
        if onclick is None:
            onclick = html.escape(
                f"cardClicked('{tabname}', {item['prompt']}, {item.get('negative_prompt', quote_js(''))}, "
                f"{'true' if self.allow_negative_prompt else 'false'})"
            )
        sort_keys = " ".join(
            f'data-sort-{k}="{html.escape(str(v))}"' for k, v in item.get("sort_keys", {}).items()
        ).strip()
        search_terms = "".join(
            f"<span class='hidden search_terms'>{html.escape(t)}</span>" for t in item.get("search_terms", [])
        )
        description = item.get("description") or ""
        if not shared.opts.extra_networks_card_description_is_html:
            description = html.escape(description)
        return (
            f"<div class='card' data-name='{html.escape(item['name'])}' {sort_keys} onclick='{onclick}'>"
            f"{search_terms}<span class='name'>{html.escape(item['name'])}</span>"
            f"<span class='description'>{description}</span></div>"
        )

    def create_html(self, tabname, *, empty=False):
        self.lister.reset()
        self.metadata = {}
        items_list = [] if empty else self.list_items()
        self.items = {x["name"]: x for x in items_list}
        for item in self.items.values():
            metadata = item.get("metadata")
            if metadata:
                self.metadata[item["name"]] = metadata
            if "user_metadata" not in item:
                self.read_user_metadata(item)
        return "".join(self.create_item_html(tabname, item) for item in self.items.values())

    def create_item(self, name, index=None):  # the base signature lacks enable_filter (§4.2)
        raise NotImplementedError

    def list_items(self):
        raise NotImplementedError

    def allowed_directories_for_previews(self):
        return []

    def get_sort_keys(self, path):
        """§4.2: ``date_created = int(mtime)``, ``date_modified = int(ctime)`` (swapped in the webui)."""
        pth = os.path.abspath(path)
        mtime, ctime = self.lister.mctime(path)
        return {
            "date_created": int(mtime),
            "date_modified": int(ctime),
            "name": os.path.basename(pth).lower(),
            "path": pth.lower(),
        }

    def find_preview(self, path):
        """§4.2: for each extension, ``<path>.<ext>`` then ``<path>.preview.<ext>``."""
        potential_files = sum(
            [[f"{path}.{ext}", f"{path}.preview.{ext}"] for ext in allowed_preview_extensions()], []
        )
        for file in potential_files:
            if self.lister.exists(file):
                return self.link_preview(file)
        return None

    def find_embedded_preview(self, path, name, metadata):
        file = f"{path}.safetensors"
        if (
            self.lister.exists(file)
            and "ssmd_cover_images" in metadata
            # the real page json.loads this value: it must be a JSON *string* (a list raises TypeError)
            and len(list(filter(None, json.loads(metadata["ssmd_cover_images"])))) > 0
        ):
            return f"./sd_extra_networks/cover-images?page={self.extra_networks_tabname}&item={name}"
        return None

    def find_description(self, path):
        for file in [f"{path}.txt", f"{path}.description.txt"]:
            if not self.lister.exists(file):
                continue
            try:
                with open(file, encoding="utf-8", errors="replace") as f:
                    return f.read()
            except OSError:
                pass
        return None

    def create_user_metadata_editor(self, ui, tabname):
        from modules.ui_extra_networks_user_metadata import UserMetadataEditor

        return UserMetadataEditor(ui, tabname, self)
