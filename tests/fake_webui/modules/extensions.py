"""Fake ``modules.extensions`` (A1111_CONTRACT.md §1.1): built-ins first, disabled by directory name."""

from __future__ import annotations

import os

from modules import shared


class Extension:
    def __init__(self, name, path, enabled=True, is_builtin=False):
        self.name = name
        self.canonical_name = name.lower()
        self.path = path
        self.enabled = enabled
        self.is_builtin = is_builtin

    def list_files(self, subdir, extension):
        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        return [
            os.path.join(dirpath, f)
            for f in sorted(os.listdir(dirpath))
            if os.path.splitext(f)[1].lower() == extension
        ]


extensions: list[Extension] = []


def active():
    """§1.1: ``disable_all_extensions`` "all" drops everything, "extra" keeps only built-ins."""
    if shared.cmd_opts.disable_all_extensions or shared.opts.disable_all_extensions == "all":
        return []
    if shared.cmd_opts.disable_extra_extensions or shared.opts.disable_all_extensions == "extra":
        return [x for x in extensions if x.enabled and x.is_builtin]
    return [x for x in extensions if x.enabled]


def list_extensions(builtin_dirs=(), extra_dirs=()):
    """§1.1: scan built-ins, then user extensions, each sorted by directory name."""
    extensions.clear()
    for dirs, is_builtin in ((builtin_dirs, True), (extra_dirs, False)):
        for path in sorted(dirs, key=lambda p: os.path.basename(p)):
            name = os.path.basename(path)
            if any(e.canonical_name == name.lower() for e in extensions):
                continue  # §1.1: a second directory with the same canonical name is discarded
            extensions.append(
                Extension(
                    name, path, enabled=name not in shared.opts.disabled_extensions, is_builtin=is_builtin
                )
            )
