"""Path safety (traversal, links out of the roots), hidden folders, link loops, and thread safety of refresh."""

from __future__ import annotations

import os
import threading

import pytest
from test_library_tree import PNG_1PX, build_tree, write_lora

from lora_ext.errors import Problem
from lora_ext.library import LoraEntry, LoraLibrary, page_items


@pytest.fixture
def outside(tmp_path):
    """A folder beside the root with a LoRA, a secret and a picture that must never be reachable."""
    folder = tmp_path / "outside"
    write_lora(folder / "external.safetensors", "sd1", {"ss_output_name": "external"})
    (folder / "secret.txt").write_text("secret")
    (folder / "pic.png").write_bytes(PNG_1PX)
    return folder


@pytest.mark.parametrize(
    "path",
    ["../outside/secret.txt", "sub/../../outside/secret.txt", "..", "", "a\x00b"],
)
def test_safe_path_refuses_traversal(tmp_path, outside, path):
    write_lora(tmp_path / "L" / "sub" / "a.safetensors")
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    result = library.safe_path(path)
    assert isinstance(result, Problem) and "Refused" in result.message


def test_safe_path_accepts_inside_and_refuses_absolute_outside(tmp_path, outside):
    write_lora(tmp_path / "L" / "sub" / "a.safetensors")
    library = LoraLibrary([tmp_path / "L"], cache_path=False)
    inside = os.path.realpath(tmp_path / "L" / "sub" / "a.safetensors")
    assert library.safe_path("sub/a.safetensors") == inside
    assert library.safe_path(str(tmp_path / "L" / "sub" / "a.safetensors")) == inside
    assert isinstance(library.safe_path(str(outside / "secret.txt")), Problem)
    assert isinstance(library.safe_path("/etc/passwd"), Problem)
    missing = library.safe_path("sub/none.png")
    assert isinstance(missing, Problem) and "No such file" in missing.message


def test_links_out_of_the_root_are_refused(tmp_path, outside):
    root = tmp_path / "L"
    write_lora(root / "a.safetensors")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "linked.safetensors").symlink_to(outside / "external.safetensors")
    (root / "a.png").symlink_to(outside / "pic.png")  # a preview that is a link to outside
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    library = LoraLibrary([root], cache_path=False)
    report = library.refresh()
    assert [e.name for e in library.entries()] == ["a"]
    warned = {p.subject for p in report.errors}
    assert {str(root / "linked_dir"), str(root / "linked.safetensors")} <= warned
    for name in ("external", "linked", "linked_dir/external"):
        assert isinstance(library.resolve(name), Problem)
    entry = library.resolve("a")
    assert isinstance(entry, LoraEntry)
    assert entry.preview is None  # the preview link leaves the root: not offered
    assert library.preview_file(entry) is None
    (root / "a.preview.png").write_bytes(PNG_1PX)  # a real preview further down the lookup order is used
    library.refresh()
    assert library.resolve("a").preview == str(root / "a.preview.png")
    (root / "a.preview.png").unlink()  # swapped for a link out of the root after the scan: still refused
    (root / "a.preview.png").symlink_to(outside / "pic.png")
    assert isinstance(library.preview_file(library.resolve("a")), Problem)
    assert isinstance(library.safe_path("escape.txt"), Problem)
    assert isinstance(library.safe_path("linked_dir/secret.txt"), Problem)


def test_external_links_when_allowed(tmp_path, outside):
    root = tmp_path / "L"
    (root).mkdir()
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    library = LoraLibrary([root], cache_path=False, allow_external_links=True)
    library.refresh()
    assert [e.relpath for e in library.entries()] == ["linked_dir/external"]


def test_links_inside_the_root_are_followed_once_and_loops_end(tmp_path):
    root = tmp_path / "L"
    write_lora(root / "real" / "a.safetensors")
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    (root / "alias_dir").symlink_to(root / "real", target_is_directory=True)
    other = tmp_path / "elsewhere"
    write_lora(other / "b.safetensors", seed=2)
    (root / "z_link").symlink_to(tmp_path / "L2", target_is_directory=True)
    (tmp_path / "L2").mkdir()
    write_lora(tmp_path / "L2" / "c.safetensors", seed=3)
    library = LoraLibrary([root, tmp_path / "L2"], cache_path=False)
    library.refresh()
    # each file once, under its real folder; the loop link and the second name of real/ add nothing
    assert sorted(e.relpath for e in library.entries()) == ["c", "real/a"]


@pytest.mark.parametrize(
    "mode, on_page, search_only",
    [("When searched", True, True), ("Always", True, False), ("Never", False, False)],
)
def test_hidden_folders_follow_the_webui_setting(tmp_path, mode, on_page, search_only):
    paths = build_tree(tmp_path)
    library = LoraLibrary([tmp_path / "Lora"], cache_path=False, hidden=mode)
    library.refresh()
    secret = library.get(str(paths["secret"]))
    assert secret is not None and secret.hidden and secret.relpath == ".hidden/secret"
    assert isinstance(library.resolve("secret"), LoraEntry)  # tags work in every mode, as in the webui
    assert len(library.entries(include_hidden=False)) == len(library.entries()) - 1
    items = [i for i in page_items(library) if i["filename"] == str(paths["secret"])]
    assert bool(items) == on_page
    if on_page:
        assert (items[0]["hidden"], items[0]["search_only"]) == (True, search_only)
    defaults = [i["sort_keys"]["default"] for i in page_items(library)]
    assert defaults == list(range(len(defaults)))


def test_list_hidden_false_skips_dot_folders(tmp_path):
    paths = build_tree(tmp_path)
    library = LoraLibrary([tmp_path / "Lora"], cache_path=False, list_hidden=False)
    library.refresh()
    assert library.get(str(paths["secret"])) is None
    assert isinstance(library.resolve("secret"), Problem)
    assert library.get(str(paths["style_a"])) is not None


def test_refresh_while_resolving_never_shows_a_half_built_index(tmp_path):
    build_tree(tmp_path)
    extra = [tmp_path / "Lora" / "batch" / f"extra{i}.safetensors" for i in range(20)]
    library = LoraLibrary([tmp_path / "Lora", tmp_path / "LyCORIS"], cache_path=tmp_path / "c.json")
    library.refresh()
    base_count = len(library.entries())
    failures: list[str] = []
    counts: set[int] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            entries = library.entries()
            counts.add(len(entries))
            for name in ("style_a", "chars/hero", "loha_thing", "StyleAlias"):
                if not isinstance(library.resolve(name), LoraEntry):
                    failures.append(name)
            if entries and not isinstance(library.resolve(entries[-1].relpath), LoraEntry):
                failures.append(entries[-1].relpath)

    threads = [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(4):
            for i, path in enumerate(extra):
                if round_ % 2 == 0:
                    write_lora(path, "sd1", seed=100 + i)
                else:
                    os.remove(path)
            library.refresh()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert counts <= {base_count, base_count + len(extra)}
    assert len(library.entries()) == base_count
