"""User-facing lines of an activation: into the generation info (``p.comment``) and the console.

A1111_CONTRACT §3.5: "Lora not found: a, b" goes under the image, to the console when
``lora_not_found_warning_console`` and to a popup when ``lora_not_found_gradio_warning``. Our extra lines (coverage,
architecture mismatch, bad tags) always go to both the generation info and the console. Never a traceback for a
user error; ``report_exception`` is for engine bugs only.
"""

from __future__ import annotations

from typing import Any

from lora_ext.errors import Problem

PREFIX = "[lora_ext]"


def console(line: str) -> None:
    print(f"{PREFIX} {line}")


def not_found_name(name: str, problems: list[Problem]) -> str:
    """``x`` or ``x (did you mean 'y'?)`` from the library's not-found Problem (suggestions in ``details``)."""
    suggestions = [d for p in problems for d in p.details if p.message.startswith("Lora not found")]
    if suggestions:
        return f"{name} (did you mean {' or '.join(repr(s) for s in suggestions[:3])}?)"
    return name


def not_found(p: Any, names: list[str], lines: list[str]) -> None:
    """Add the "Lora not found" line and honour the built-in's two notification settings."""
    from modules import shared

    text = f"Lora not found: {', '.join(names)}"
    lines.append(text)
    if getattr(shared.opts, "lora_not_found_warning_console", False):
        console(text)
    if getattr(shared.opts, "lora_not_found_gradio_warning", False):
        try:
            import gradio as gr

            gr.Warning(text)
        except Exception:  # no UI context (API call): the line is in the generation info anyway
            pass


def activation_lines(found: Any) -> list[str]:
    """Lines for an ``ActiveSet``: each LoRA's coverage summary when keys were unmatched or the file was refused,
    then every warning and error (lookup notes such as duplicates, bad arguments, load and coverage problems) that
    no earlier line already says."""
    out: list[str] = []
    for _, report in found.reports:
        if report is not None and (
            getattr(report, "unmatched", None) or getattr(report, "verdict", "ok") != "ok"
        ):
            out.append(report.summary())
    for problem in found.problems:
        line = str(problem)
        # A refused file's coverage line already ends with its reason: do not say it twice.
        if problem.severity != "info" and not any(line == o or problem.message in o for o in out):
            out.append(line)
    return out


def deliver(p: Any, lines: list[str]) -> None:
    """Write each line once into the generation info (``p.comment``) and the console.

    "Lora not found" always goes under the image (the built-in's behaviour); the other lines do unless the user
    turned ``lora_ext_coverage_in_infotext`` off, and always reach the console.
    """
    from modules import shared

    to_info = getattr(shared.opts, "lora_ext_coverage_in_infotext", True)
    seen: set[str] = set()
    for line in lines:
        if line in seen:
            continue
        seen.add(line)
        not_found_line = line.startswith("Lora not found")
        if hasattr(p, "comment") and (to_info or not_found_line):
            p.comment(line)
        if not not_found_line:
            console(line)


def notice(p: Any, line: str) -> None:
    """A line that always goes under the image (``p.comment``) and to the console, whatever
    ``lora_ext_coverage_in_infotext`` says: it is about the user's prompts, not about a file's coverage."""
    if hasattr(p, "comment"):
        p.comment(line)
    console(line)


def report_exception(task: str, exc: BaseException) -> None:
    """An unexpected engine error: full traceback to the webui's error log, never to the user's image info."""
    try:
        from modules import errors

        errors.report(f"{task}: {exc}", exc_info=True)
    except Exception:
        console(f"{task}: {type(exc).__name__}: {exc}")
