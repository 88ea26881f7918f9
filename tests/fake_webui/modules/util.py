"""Fake ``modules.util`` (A1111_CONTRACT.md §9.2): natural sort, ``walk_files``, ``MassFileLister``."""

from __future__ import annotations

import os
import re


def natural_sort_key(s, regex=re.compile("([0-9]+)")):
    return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]


def walk_files(path, allowed_extensions=None):
    """§9.2: ``os.walk(followlinks=True)``, natural sort, hidden dirs skipped unless ``list_hidden_files``."""
    from modules import shared

    if not os.path.exists(path):
        return
    if allowed_extensions is not None:
        allowed_extensions = set(allowed_extensions)
    items = list(os.walk(path, followlinks=True))
    items = sorted(items, key=lambda x: natural_sort_key(x[0]))
    for root, _, files in items:
        for filename in sorted(files, key=natural_sort_key):
            if allowed_extensions is not None:
                _, ext = os.path.splitext(filename)
                if ext.lower() not in allowed_extensions:
                    continue
            if not shared.opts.list_hidden_files and ("/." in root or "\\." in root):
                continue
            yield os.path.join(root, filename)


class MassFileLister:
    """§4.1: the page's ``lister``; here a thin wrapper over ``os.path``."""

    def exists(self, path):
        return os.path.exists(path)

    def mctime(self, path):
        st = os.stat(path)
        return st.st_mtime, st.st_ctime

    def reset(self):
        pass
