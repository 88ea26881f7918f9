"""Fake ``modules.options`` (A1111_CONTRACT.md §7): OptionInfo, options_section, Options with default fallback."""

from __future__ import annotations


class OptionInfo:
    """One setting's template (§7: same constructor keywords and chainable helpers as the webui)."""

    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
        category_id=None,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api
        self.reload_ui = False
        self.restart = False

    def link(self, label, url):
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label, js_func):
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        self.restart = True
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self):
        self.reload_ui = True
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


def options_section(section_identifier, options_dict):
    """§7: sets ``.section`` (and ``category_id`` from a 3-tuple) on every entry and returns the dict."""
    for v in options_dict.values():
        if len(section_identifier) == 2:
            v.section = section_identifier
        elif len(section_identifier) == 3:
            v.section = section_identifier[0:2]
            v.category_id = section_identifier[2]
    return options_dict


class Options:
    """§7: ``data_labels`` IS the templates dict; attribute reads fall back to the template default."""

    typemap = {int: float}

    def __init__(self, data_labels: dict, restricted_opts=None):
        super().__setattr__("data_labels", data_labels)
        super().__setattr__("data", {k: v.default for k, v in data_labels.items() if not v.do_not_save})
        super().__setattr__("restricted_opts", restricted_opts or set())

    def __setattr__(self, key, value):
        if key in ("data", "data_labels", "restricted_opts"):
            return super().__setattr__(key, value)
        if key in self.data or key in self.data_labels:
            self.set(key, value)
            return
        return super().__setattr__(key, value)

    def __getattr__(self, item):
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        labels = self.__dict__.get("data_labels", {})
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def set(self, key, value, is_api=False, run_callbacks=True):
        oldval = self.data.get(key, None)
        if oldval == value:
            return False
        info = self.data_labels.get(key)
        self.data[key] = value
        if run_callbacks and info is not None and info.onchange is not None:
            try:
                info.onchange()
            except Exception:
                self.data[key] = oldval
                raise
        return True

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def add_option(self, key, info):
        """§7: register at ``on_ui_settings`` time; keeps a value already loaded from config."""
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def onchange(self, key, func, call=True):
        """§7: REPLACES ``info.onchange`` and calls ``func()`` at once by default."""
        item = self.data_labels.get(key)
        item.onchange = func
        if call:
            func()
