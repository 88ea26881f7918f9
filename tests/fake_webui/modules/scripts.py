"""Fake ``modules.scripts`` (A1111_CONTRACT.md §1.2, §8.1).

``load_scripts`` reproduces the import rules: ``script_callbacks.clear_callbacks()`` first; per file the extension
root is prepended to ``sys.path`` only during the import; the module is loaded by ``spec_from_file_location`` under
the file's basename; EVERY class in its namespace that subclasses ``Script`` is registered (even an imported base).
``ScriptRunner`` calls a hook only on always-visible scripts that override it (§8.1).
"""

from __future__ import annotations

import inspect
import sys
from collections import namedtuple

from modules import errors, extensions, script_callbacks, script_loading

AlwaysVisible = object()

ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []
current_basedir: str | None = None


class Script:
    name = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass


def basedir():
    """§1.2: the extension root, only while its scripts are being imported."""
    return current_basedir


def load_scripts():
    """§1.2: import every ``scripts/*.py`` of every active extension, built-ins first."""
    global current_basedir
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    for ext in extensions.active():
        for path in ext.list_files("scripts", ".py"):
            syspath = sys.path
            try:
                sys.path = [ext.path] + sys.path
                current_basedir = ext.path
                module = script_loading.load_module(path)
                for _key, script_class in module.__dict__.items():
                    if type(script_class) is type and issubclass(script_class, Script):
                        scripts_data.append(ScriptClassData(script_class, path, ext.path, module))
            except Exception:
                errors.report(f"Error loading script: {path}", exc_info=True)
            finally:
                sys.path = syspath
                current_basedir = None


class ScriptRunner:
    """§8.1: always-visible scripts only; a hook runs only if the class overrides it."""

    def __init__(self, is_img2img=False):
        self.alwayson_scripts = []
        for data in scripts_data:
            script = data.script_class()
            script.filename = data.path
            script.is_img2img = is_img2img
            script.is_txt2img = not is_img2img
            if script.show(is_img2img) is AlwaysVisible:
                script.alwayson = True
                self.alwayson_scripts.append(script)
        self.script_args = {id(s): () for s in self.alwayson_scripts}
        #: (component, infotext field name) pairs registered by scripts; the AddNet extension adds "AddNet Module 1".
        self.infotext_fields = []

    def _call(self, hook, p, *args, **kwargs):
        for script in self.alwayson_scripts:
            if getattr(type(script), hook) is getattr(Script, hook):
                continue
            try:
                getattr(script, hook)(p, *args, *self.script_args[id(script)], **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        self._call("setup", p)

    def before_process(self, p):
        self._call("before_process", p)

    def process(self, p):
        self._call("process", p)

    def before_process_batch(self, p, **kwargs):
        self._call("before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._call("after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._call("process_batch", p, **kwargs)

    def postprocess_batch(self, p, images, **kwargs):
        self._call("postprocess_batch", p, images=images, **kwargs)

    def before_hr(self, p):
        self._call("before_hr", p)

    def postprocess(self, p, processed):
        for script in self.alwayson_scripts:
            if type(script).postprocess is Script.postprocess:
                continue
            try:
                script.postprocess(p, processed, *self.script_args[id(script)])
            except Exception:
                errors.report(f"Error running postprocess: {script.filename}", exc_info=True)


scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None


def create_script_runners():
    """The webui builds one runner per tab after ``load_scripts``."""
    global scripts_txt2img, scripts_img2img
    scripts_txt2img = ScriptRunner(is_img2img=False)
    scripts_img2img = ScriptRunner(is_img2img=True)
    return scripts_txt2img


def list_scripts_classes():
    return [d.script_class for d in scripts_data]


__all__ = ["Script", "AlwaysVisible", "basedir", "load_scripts", "ScriptRunner", "inspect"]
