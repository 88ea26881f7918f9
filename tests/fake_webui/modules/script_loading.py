"""Fake ``modules.script_loading`` (A1111_CONTRACT.md §1.2): module named after the FILE, not put in sys.modules."""

from __future__ import annotations

import importlib.util
import os


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
