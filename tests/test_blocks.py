"""``lbw=`` block weights (USERS §7.1 G1, G2): presets, lists of every length, random values, messages, factors."""

from __future__ import annotations

import pytest

from lora_ext.adapters import ActiveLora, ResolvedLora, Target
from lora_ext.blocks import ALL_BLOCKS, BLOCK_LISTS, PRESETS, BlockWeights, parse_block_weights
from lora_ext.errors import Problem


def weights(value: str, family: str = "sd1", **kw) -> BlockWeights:
    result = parse_block_weights(value, family, **kw)
    assert isinstance(result, BlockWeights), result
    return result


def target(block: str, component: str = "unet") -> Target:
    return Target(component=component, path=f"p.{block}", canonical=f"c.{block}", block=block)


def test_outd_preset_sets_base_and_the_deep_output_blocks_only():
    factors = weights("OUTD").as_dict()
    ones = {label for label, value in factors.items() if value == 1.0}
    assert ones == {"BASE", "OUT03", "OUT04", "OUT05", "OUT06"}
    assert all(value == 0.0 for label, value in factors.items() if label not in ones)
    assert list(factors) == list(ALL_BLOCKS)


def test_presets_have_17_values_and_the_lbw_defaults():
    assert set(PRESETS) == {"NONE", "ALL", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL", "ALL0.5"}
    assert all(len(v) == 17 for v in PRESETS.values())
    assert weights("ALL0.5").factor(target("MID")) == 0.5
    # IND: BASE plus IN05, IN07, IN08
    ind = weights("IND").as_dict()
    assert {k for k, v in ind.items() if v} == {"BASE", "IN05", "IN07", "IN08"}


def test_17_value_list_names_blocks_in_lbw_order_and_leaves_the_rest_at_zero():
    values = [str(i / 100) for i in range(1, 18)]
    factors = weights(",".join(values)).as_dict()
    for label, value in zip(BLOCK_LISTS[17], values, strict=True):
        assert factors[label] == float(value)
    for label in ("IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00", "OUT01", "OUT02"):
        assert factors[label] == 0.0


def test_26_value_list_sets_every_block():
    values = [float(i) for i in range(26)]
    factors = weights(",".join(str(v) for v in values)).as_dict()
    assert list(factors.values()) == values


def test_sdxl_lists_and_sd1_presets_on_sdxl():
    xl = weights("1,0,0,0,0,0.5,1,1,1,1,1,1", "sdxl").as_dict()
    assert xl["MID"] == 0.5 and xl["OUT05"] == 1.0 and xl["IN04"] == 0.0 and xl["OUT06"] == 0.0
    assert weights(",".join(["1"] * 20), "sdxl").factor(target("OUT08")) == 1.0
    # a 17-value preset is read by block name on SDXL, as LoRA Block Weight does
    assert weights("OUTD", "sdxl").factor(target("OUT03")) == 1.0
    assert weights("OUTD", "sdxl").factor(target("OUT00")) == 0.0


@pytest.mark.parametrize(
    ("value", "family", "found", "expected"),
    [
        (",".join(["1"] * 12), "sd1", "12 values", "17 or 26"),
        (",".join(["1"] * 20), "sd2", "20 values", "17 or 26"),
        (",".join(["1"] * 18), "sdxl", "18 values", "12 or 20"),
    ],
)
def test_wrong_length_names_tag_length_found_and_lengths_expected(value, family, found, expected):
    problem = parse_block_weights(value, family, tag="<lora:x:1:lbw=…>")
    assert isinstance(problem, Problem)
    assert problem.subject == "<lora:x:1:lbw=…>"
    assert found in problem.message and expected in problem.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("OUTX", "neither a block-weight preset"),
        ("outd", "neither a block-weight preset"),  # preset names are case-sensitive, as in LBW
        ("1,0,0,0,0,0,0,0,a,1,1,1,0,0,0,0,0", '"a" is not a number'),
        ("1,0,0,0,0,0,0,0,inf,1,1,1,0,0,0,0,0", "not a finite number"),
        ("1,0,0,0,0,0,0,0,X,1,1,1,0,0,0,0,0", "not supported"),
        ("1,0,0,0,0,0,0,0,,1,1,1,0,0,0,0,0", "not a number"),
    ],
)
def test_bad_values_are_problems(value, words):
    problem = parse_block_weights(value, "sd1")
    assert isinstance(problem, Problem) and words in problem.message


def test_random_values_follow_the_seed_and_stay_in_range():
    value = ",".join(["R"] * 8 + ["U"] * 9)
    a = weights(value, seed=7).as_dict()
    assert weights(value, seed=7).as_dict() == a
    assert weights(value, seed=8).as_dict() != a
    r_blocks, u_blocks = BLOCK_LISTS[17][:8], BLOCK_LISTS[17][8:]
    assert all(0.0 <= a[b] <= 1.0 for b in r_blocks)
    assert all(-1.5 <= a[b] <= 1.5 for b in u_blocks)
    assert all(round(a[b], 3) == a[b] for b in BLOCK_LISTS[17])


def test_layers_outside_blocks_keep_factor_one_and_text_encoders_use_base():
    bw = weights("NONE")
    assert bw.factor(target("")) == 1.0
    assert bw.factor(target("BASE", "te1")) == 0.0
    assert weights("INS").factor(target("BASE", "te2")) == 1.0


def test_equal_values_are_equal_and_hashable():
    assert weights("ALL").factors == weights(",".join(["1"] * 17)).factors
    assert hash(weights("OUTD")) == hash(weights("OUTD"))
    assert weights("OUTD") != weights("OUTS")


def test_active_lora_multiplier_is_tag_weight_times_block_factor():
    lora = ResolvedLora(name="x", path="x.safetensors", layers={})
    bw = weights("1,0,0,0,0,0,0,0.5,0,0,0,0,0,0,0,0,0")
    active = ActiveLora(lora, te=0.8, unet=-10.0, blocks=bw)
    assert active.multiplier(target("MID")) == -5.0  # G2: the tag weight still scales (negative, large)
    assert active.multiplier(target("OUT03")) == 0.0
    assert active.multiplier(target("")) == -10.0
    assert active.multiplier(target("BASE", "te1")) == 0.8
    assert ActiveLora(lora, te=0.8, unet=0.3).multiplier(target("OUT03")) == 0.3
