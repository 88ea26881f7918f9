"""Fake ``modules.infotext_utils`` (A1111_CONTRACT.md §11): quoting of values and the paste hook.

``parse_generation_parameters`` parses the last line the webui's way (``k: v`` pairs, values quoted when they
contain ``,`` ``:`` or ``"``); ``paste_infotext`` is what the paste button and ``/sdapi/v1/png-info`` do with it:
parse, then ``script_callbacks.infotext_pasted_callback(x, params)``.
"""

from __future__ import annotations

import json
import re

from modules import script_callbacks

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def create_infotext(prompt, negative_prompt, generation_params: dict) -> str:
    """Prompt line, ``Negative prompt:`` line, then ``k: v`` pairs (quoted as the webui does, §11)."""
    params_text = ", ".join(
        [k if k == v else f"{k}: {quote(v)}" for k, v in generation_params.items() if v is not None]
    )
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{params_text}".strip()


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None):
    """§11: parse only. The webui runs the ``infotext_pasted`` callbacks in its callers (the paste button's
    ``paste_func`` and ``POST /sdapi/v1/png-info``), not here; see ``paste_infotext``."""
    if skip_fields is None:
        skip_fields = []
    res = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    for k, v in re_param.findall(lastline):
        try:
            if v and v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f'Error parsing "{k}: {v}"')
    for key in skip_fields:
        res.pop(key, None)
    return res


def paste_infotext(x: str) -> dict:
    """What the paste button (``connect_paste.paste_func``) and ``/sdapi/v1/png-info`` do (§11): parse, then run the
    ``infotext_pasted`` callbacks on the parsed params."""
    params = parse_generation_parameters(x)
    script_callbacks.infotext_pasted_callback(x, params)
    return params


#: Fields registered by other extensions' paste handlers (the AddNet extension registers "AddNet Module 1").
paste_fields: dict = {}
registered_param_bindings: list = []


class ParamBinding:
    def __init__(
        self,
        paste_button,
        tabname,
        source_text_component=None,
        source_image_component=None,
        source_tabname=None,
        override_settings_component=None,
        paste_field_names=None,
    ):
        self.paste_button = paste_button
        self.tabname = tabname
        self.paste_field_names = paste_field_names or []
