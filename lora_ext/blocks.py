"""Block weights: the ``lbw=`` argument of LoRA Block Weight (USERS §7.1 G1, G2, G5).

A block-weight vector gives one factor per UNet block (plus ``BASE`` for the text encoders). It is written as a
preset name (``lbw=OUTD``) or as a comma list of 17 / 26 numbers (SD1, SD2) or 12 / 20 numbers (SDXL), each list
naming the blocks of ``BLOCK_LISTS`` in order. As in LoRA Block Weight, every list is read by block name, so a
17-value preset also works on SDXL (its ``IN01``, ``IN02`` … entries land on the SDXL blocks of the same name), and
blocks a list does not name get factor 0. ``R`` is a random factor in [0, 1], ``U`` one in [-1.5, 1.5] (3 decimals,
from the seed the host passes, so a generation can be repeated). ``X`` (a weight inherited from an extra tag argument)
is not supported and gives a Problem.

The tag multipliers (te, unet) still scale everything: the factor multiplies them (G2). Pure functions, no state.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from lora_ext.adapters import Target
from lora_ext.errors import Problem

_IN = tuple(f"IN{i:02d}" for i in range(12))
_OUT = tuple(f"OUT{i:02d}" for i in range(12))

#: Every block label ``Target.block`` can carry, in LoRA Block Weight's 26-block order (its ``M00`` is our ``MID``).
ALL_BLOCKS = ("BASE", *_IN, "MID", *_OUT)

#: Vector length -> the blocks its values name, in order (LoRA Block Weight's BLOCKID17/26/12/20).
BLOCK_LISTS: dict[int, tuple[str, ...]] = {
    17: ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID", *_OUT[3:]),
    26: ALL_BLOCKS,
    12: ("BASE", "IN04", "IN05", "IN07", "IN08", "MID", *_OUT[:6]),
    20: ("BASE", *_IN[:9], "MID", *_OUT[:9]),
}

#: Model family -> the vector lengths written for it. SDXL also takes the SD1-style 17/26 lists (LoRA Block Weight
#: reads every list by block name, and its presets are 17 values long); an SD1/SD2 model never takes the SDXL
#: lengths, which name blocks that mean something else there.
FAMILY_LENGTHS: dict[str, tuple[int, ...]] = {"sd1": (17, 26), "sd2": (17, 26), "sdxl": (12, 20, 17, 26)}

#: LoRA Block Weight's default presets (its built-in list), 17 values each.
PRESETS: dict[str, tuple[float, ...]] = {
    name: tuple(float(v) for v in values.split(","))
    for name, values in (
        ("NONE", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"),
        ("ALL", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"),
        ("INS", "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0"),
        ("IND", "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"),
        ("INALL", "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0"),
        ("MIDD", "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0"),
        ("OUTD", "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0"),
        ("OUTS", "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1"),
        ("OUTALL", "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
        ("ALL0.5", ",".join(["0.5"] * 17)),
    )
}

#: Ranges of the random values (inclusive bounds).
RANDOM_RANGES = {"R": (0.0, 1.0), "U": (-1.5, 1.5)}


@dataclass(frozen=True)
class BlockWeights:
    """A parsed ``lbw=`` value: one factor per block label; hashable and compared by value.

    factors: ``(label, factor)`` for every label of ``ALL_BLOCKS`` (0.0 for blocks the vector does not name).
    source: the value as written (preset name or list), for messages.
    """

    factors: tuple[tuple[str, float], ...]
    source: str = ""

    def factor(self, target: Target) -> float:
        """The factor for ``target`` by its ``Target.block`` label: ``BASE`` for text-encoder targets, ``INxx`` /
        ``MID`` / ``OUTxx`` for UNet blocks. Layers outside every block (``block == ""``: time embedding, ``out``,
        ``conv_in``) keep factor 1.0, as LoRA Block Weight leaves layers it cannot place untouched."""
        if not target.block:
            return 1.0
        return dict(self.factors).get(target.block, 1.0)

    def as_dict(self) -> dict[str, float]:
        """``{label: factor}`` in ``ALL_BLOCKS`` order."""
        return dict(self.factors)


def parse_block_weights(
    value: str, family: str, *, tag: str = "", seed: int | None = None
) -> BlockWeights | Problem:
    """Read an ``lbw=`` value for a model of ``family`` ("sd1", "sd2", "sdxl").

    value: a preset name of ``PRESETS`` (case-sensitive, as in LoRA Block Weight) or comma-separated numbers, ``R``
        or ``U``. tag: the tag text for messages. seed: seeds ``R``/``U`` (None means 0).
    Returns the weights, or a Problem naming the tag, what was found and what the model expects.
    """
    subject = tag or f"lbw={value}"
    text = value.strip()
    lengths = FAMILY_LENGTHS.get(str(family).lower(), (17, 26))
    expected = " or ".join(str(n) for n in lengths)
    if text in PRESETS:
        return _from_vector(PRESETS[text], text)
    items = [item.strip() for item in text.split(",")]
    if len(items) == 1:
        presets = ", ".join(PRESETS)
        return Problem(
            subject,
            f'lbw="{value}" is neither a block-weight preset nor a list of numbers; use a preset ({presets}) '
            f"or {expected} comma-separated numbers for this {_arch(family)} model.",
        )
    if len(items) not in lengths:
        return Problem(
            subject,
            f"lbw= has {len(items)} values, but a block-weight list for this {_arch(family)} model has {expected} "
            f"values ({_length_hint(lengths)}); blocks left out would get weight 0.",
        )
    rng = random.Random(0 if seed is None else seed)
    numbers: list[float] = []
    for item in items:
        number = _read_value(item, rng)
        if isinstance(number, str):
            return Problem(subject, f"lbw= value {number}")
        numbers.append(number)
    return _from_vector(tuple(numbers), text)


def _from_vector(values: tuple[float, ...], source: str) -> BlockWeights:
    named = dict(zip(BLOCK_LISTS[len(values)], values, strict=True))
    return BlockWeights(tuple((label, float(named.get(label, 0.0))) for label in ALL_BLOCKS), source)


def _read_value(item: str, rng: random.Random) -> float | str:
    """One list entry as a float, or the end of an error sentence."""
    if item in RANDOM_RANGES:
        low, high = RANDOM_RANGES[item]
        return round(rng.uniform(low, high), 3)
    if item.startswith("X"):
        return f'"{item}" (a weight inherited from an extra tag argument) is not supported; write a number instead.'
    try:
        number = float(item)
    except ValueError:
        return f'"{item}" is not a number; write numbers such as 0.5, or R / U for random weights.'
    if not math.isfinite(number):
        return f'"{item}" is not a finite number; write numbers such as 0.5.'
    return number


def _arch(family: str) -> str:
    return {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}.get(str(family).lower(), str(family))


def _length_hint(lengths: tuple[int, ...]) -> str:
    meaning = {
        17: "17 for LoRA",
        26: "26 for LyCORIS / all blocks",
        12: "12 for SDXL LoRA",
        20: "20 for SDXL all",
    }
    return ", ".join(meaning[n] for n in lengths)
