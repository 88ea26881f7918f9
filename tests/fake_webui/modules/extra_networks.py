"""Fake ``modules.extra_networks`` (A1111_CONTRACT.md §3).

Reproduces: registries and alias lookup (§3.1), regex and first-prompt rule (§3.2), ``split('=', 2)`` rule (§3.3),
``activate`` with ``[]`` for unmentioned networks and failed activations, ``after_extra_networks_activate`` (§3.4),
``get_user_metadata`` (§3.4).
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict

from modules import errors

extra_network_registry: dict = {}
extra_network_aliases: dict = {}


def initialize():
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network):
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network, alias):
    extra_network_aliases[alias] = extra_network


def register_default_extra_networks():
    """§2 step 5: the webui registers ``hypernet``; the fake registers nothing it cannot run."""


class ExtraNetworkParams:
    """§3.3: each string item split with ``split('=', 2)``; exactly two parts → named, else positional."""

    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return self.items == other.items

    def __repr__(self):
        return f"ExtraNetworkParams({self.items!r})"


class ExtraNetwork:
    """§3.4: base class; ``activate``/``deactivate`` raise in the base."""

    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def lookup_extra_networks(extra_network_data):
    """§3.1: registry first, alias only when the registry lacks the name; lora+lyco args merged in dict order."""
    res = {}
    for extra_network_name, extra_network_args in list(extra_network_data.items()):
        extra_network = extra_network_registry.get(extra_network_name, None)
        alias = extra_network_aliases.get(extra_network_name, None)
        if alias is not None and extra_network is None:
            extra_network = alias
        if extra_network is None:
            continue  # "Skipping unknown extra network"
        res.setdefault(extra_network, []).extend(extra_network_args)
    return res


def activate(p, extra_network_data):
    """§3.4: mentioned networks get their args; a failure is displayed and the network then gets ``[]``."""
    activated = []
    for extra_network, extra_network_args in lookup_extra_networks(extra_network_data).items():
        try:
            extra_network.activate(p, extra_network_args)
            activated.append(extra_network)
        except Exception as e:
            errors.display(
                e, f"activating extra network {extra_network.name} with arguments {extra_network_args}"
            )

    for extra_network_name, extra_network in extra_network_registry.items():
        if extra_network in activated:
            continue
        try:
            extra_network.activate(p, [])
        except Exception as e:
            errors.display(e, f"activating extra network {extra_network_name}")

    if p.scripts is not None:
        p.scripts.after_extra_networks_activate(
            p,
            batch_number=p.iteration,
            prompts=p.prompts,
            seeds=p.seeds,
            subseeds=p.subseeds,
            extra_network_data=extra_network_data,
        )


def deactivate(p, extra_network_data):
    """§3.4: ``deactivate`` on all registered networks (processing calls this only when data is truthy)."""
    data = lookup_extra_networks(extra_network_data)
    for extra_network in data:
        try:
            extra_network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating extra network {extra_network.name}")
    for extra_network_name, extra_network in extra_network_registry.items():
        if extra_network in data:
            continue
        try:
            extra_network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating unmentioned extra network {extra_network_name}")


re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    """§3.2: strip every tag; negative prompts are never passed here."""
    res = defaultdict(list)

    def found(m):
        name = m.group(1)
        args = m.group(2)
        res[name].append(ExtraNetworkParams(items=args.split(":")))
        return ""

    prompt = re.sub(re_extra_net, found, prompt)
    return prompt, res


def parse_prompts(prompts):
    """§3.2: strips every prompt, returns only the FIRST prompt's data."""
    res = []
    extra_data = None
    for prompt in prompts:
        updated_prompt, parsed_extra_data = parse_prompt(prompt)
        if extra_data is None:
            extra_data = parsed_extra_data
        res.append(updated_prompt)
    return res, extra_data


def get_user_metadata(filename, lister=None):
    """§3.4: ``<basename>.json`` next to the file; errors displayed, ``{}`` returned."""
    if filename is None:
        return {}
    basename, _ = os.path.splitext(filename)
    metadata_filename = basename + ".json"
    metadata = {}
    try:
        exists = lister.exists(metadata_filename) if lister else os.path.exists(metadata_filename)
        if exists:
            with open(metadata_filename, encoding="utf8") as file:
                metadata = json.load(file)
    except Exception as e:
        errors.display(e, f"reading extra network user metadata from {metadata_filename}")
    return metadata
