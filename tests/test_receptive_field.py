"""Receptive fields: exact against a hand-computed cone, blind spots told from short fields,
causality, drawing."""

from __future__ import annotations

import json

import pytest
import torch
from prior_cases import all_cases, case_id, prior_class, tiny_prior

import latentar
from latentar.cli import main
from latentar.nn.attention_patterns import slot_field
from latentar.priors.transformer import layer_pattern
from latentar.receptive_field import (
    COLOURS,
    LEGEND,
    architecture_reach,
    field_summary,
    position_kinds,
    prior_past,
    raster_past,
    receptive_field,
)
from latentar.registry import PRIORS

# the priors with one network (a composite's stages are registered priors of their own)
NAMES = [name for name in latentar.list_priors() if not PRIORS.get(name).composite]
NETWORK_CASES = [case for case in all_cases() if not prior_class(case[0]).composite]
FULL_CONTEXT = [n for n in NAMES if PRIORS.get(n).full_context]

MASK_B_TAPS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0)]  # a 3×3 mask-B conv, single channel


def mask_a_taps(radius: int) -> list[tuple[int, int]]:
    rows_above = [(dr, dc) for dr in range(-radius, 0) for dc in range(-radius, radius + 1)]
    return rows_above + [(0, dc) for dc in range(-radius, 0)]


def cone(shape, position, first_radius: int, blocks: int) -> torch.Tensor:
    """The inputs a mask-A conv + ``blocks`` 3×3 mask-B convs can reach -> bool (H, W).

    Walks the layers from the output back to the input; a path through a position
    outside the grid is cut (zero padding is a constant).
    """
    _, H, W = shape
    reach = {position}
    for taps in [MASK_B_TAPS] * blocks + [mask_a_taps(first_radius)]:
        reach = {(h + dh, w + dw) for h, w in reach for dh, dw in taps
                 if 0 <= h + dh < H and 0 <= w + dw < W}
    field = torch.zeros(H, W, dtype=torch.bool)
    for p in reach:
        field[p] = True
    return field


@pytest.mark.parametrize("first_kernel,blocks,position", [(3, 3, (4, 4)), (5, 2, (3, 5)), (3, 1, (2, 0))])
def test_pixelcnn_field_is_the_hand_computed_cone(first_kernel, blocks, position):
    shape = (1, 7, 8)
    prior = tiny_prior("pixelcnn", shape, 4, first_kernel=first_kernel, num_blocks=blocks)
    expected = cone(shape, position, first_kernel // 2, blocks)
    field = receptive_field(prior, position)
    assert torch.equal(field, expected), f"measured\n{field.int()}\nexpected\n{expected.int()}"


@pytest.mark.parametrize("name", [n for n in NAMES if not PRIORS.get(n).full_context])
def test_priors_without_full_context_have_a_blind_spot_up_and_to_the_right(name):
    shape, position = (1, 9, 9), (4, 4)
    field = receptive_field(tiny_prior(name, shape, 4), position)
    missed = raster_past(shape, position) & ~field
    rows, cols = torch.nonzero(missed, as_tuple=True)
    assert len(rows) > 0, "a stack of mask-B convolutions must miss part of the past"
    assert (rows < position[0]).all() and (cols > position[1]).all(), "misses lie up and to the right"


@pytest.mark.parametrize("name", FULL_CONTEXT)
def test_full_context_priors_reach_every_earlier_pixel(name):
    shape, position = (1, 9, 9), (4, 4)
    prior = latentar.build_prior(name, shape, 4, preset="small")
    field = receptive_field(prior, position)
    assert torch.equal(field, prior_past(prior, position)), f"{name} field\n{field.int()}"


@pytest.mark.parametrize("case", NETWORK_CASES, ids=case_id)
def test_no_field_reaches_the_target_or_later(case):
    name, head, C = case
    shape = (C, 5, 6)
    prior = tiny_prior(name, shape, 8, head)
    for position in [(0, 0), (0, 3), (2, 0), (2, 3), (3, 2), (4, 5)]:
        field = receptive_field(prior, position)
        past = prior_past(prior, position)  # raster, or an any-order prior's first order
        assert not (field & ~past).any(), f"{name} at {position} depends on itself or later"
        assert field.any() == past.any(), f"{name} at {position} depends on nothing earlier"


def test_threshold_keeps_the_strongest_positions():
    prior = tiny_prior("pixelcnn", (1, 6, 6), 4)
    full = receptive_field(prior)
    strong = receptive_field(prior, threshold=0.5)
    assert strong.any() and (strong & ~full).sum() == 0 and strong.sum() < full.sum()
    with pytest.raises(ValueError, match=r"threshold .* \[0, 1\), got 1.5"):
        receptive_field(prior, threshold=1.5)
    with pytest.raises(ValueError, match=r"6×6 grid, got \(6, 0\)"):
        receptive_field(prior, (6, 0))


def test_a_shallow_pixelcnns_short_field_is_not_a_blind_spot():
    shape, position = (1, 11, 11), (8, 5)
    shallow = tiny_prior("pixelcnn", shape, 4, first_kernel=3, num_blocks=1)
    field, reach = receptive_field(shallow, position), architecture_reach(shallow, position)
    assert torch.equal(field, cone(shape, position, 1, 1))
    assert torch.equal(reach, cone(shape, position, 1, 11))  # the architecture at depth max(H, W)
    summary = field_summary(field, reach, position)
    kinds = [list(COLOURS)[k] for k in position_kinds(field, reach, position).flatten().tolist()]
    assert summary["outside"] == kinds.count("outside") > 0 and summary["blind"] == kinds.count("blind") > 0
    past = raster_past(shape, position)
    rows, cols = torch.nonzero(past & ~reach, as_tuple=True)  # the blind spot: up and to the right
    assert (rows < position[0]).all() and (cols > position[1]).all()
    assert (past & ~field & reach)[0].any()  # the top rows are out of reach of this depth, not blind

    deep = tiny_prior("pixelcnn", shape, 4, first_kernel=3, num_blocks=11)  # the original PixelCNN, deep
    deep_field = receptive_field(deep, position)
    assert field_summary(deep_field, architecture_reach(deep, position), position)["outside"] == 0
    assert field_summary(deep_field, architecture_reach(deep, position), position)["blind"] == summary["blind"]


def test_a_full_context_priors_short_field_has_no_blind_spot():
    shape, position = (1, 12, 12), (10, 6)
    prior = tiny_prior("gated_pixelcnn", shape, 4)
    field, reach = receptive_field(prior, position), architecture_reach(prior, position)
    summary = field_summary(field, reach, position)
    assert summary["blind"] == 0 and summary["outside"] == summary["past"] - summary["field"] > 0


def test_each_kind_of_position():
    field = torch.tensor([[1, 0, 1, 0],
                          [1, 0, 0, 0],
                          [0, 1, 0, 0]], dtype=torch.bool)
    reach = torch.tensor([[1, 1, 0, 0],
                          [1, 1, 1, 1],
                          [1, 1, 1, 1]], dtype=torch.bool)
    kinds = position_kinds(field, reach, (1, 1))
    expected = {(0, 0): "field", (0, 1): "outside", (0, 3): "blind", (1, 1): "target", (1, 2): "future",
                (2, 1): "leak"}
    for (h, w), kind in expected.items():
        assert list(COLOURS)[kinds[h, w]] == kind, (h, w)
    assert field_summary(field, reach, (1, 1)) == {"position": [1, 1], "field": 4, "past": 5, "outside": 1,
                                                   "blind": 1, "leaks": 1}
    assert set(LEGEND) == set(COLOURS)


def test_every_prior_without_full_context_can_be_deepened():
    for name in NAMES:
        prior = tiny_prior(name, (1, 5, 5), 4)
        architecture_reach(prior, (2, 2))  # raises for a prior with neither full_context nor a depth field


def test_cli_figure_of_every_prior(tmp_path, capsys):
    out = tmp_path / "rf.png"
    assert main(["receptive-field", "--all", "--preset", "tiny", "--shape", "1,6,6", "--symbols", "4",
                 "--scale", "5", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["priors"]) == NAMES and report["legend"] == LEGEND
    pasts = {name: int(prior_past(tiny_prior(name, (1, 6, 6), 4), (3, 3)).sum()) for name in NAMES}
    assert all(s["leaks"] == 0 and s["past"] == pasts[name] for name, s in report["priors"].items())
    assert pasts["pixelcnn"] == 21 and pasts["lmconv"] == 20  # row 3 of an S-curve runs right to left
    from PIL import Image

    width, height = Image.open(out).size  # a panel per prior above the legend
    assert width > len(NAMES) * 6 * 5 and height > 6 * 5 + 40


def test_cli_single_prior_from_a_saved_model(tmp_path, capsys):
    tiny_prior("pixelcnn", (1, 5, 5), 4).save(tmp_path / "m")
    assert main(["receptive-field", "--model", str(tmp_path / "m"), "--position", "2,2",
                 "--out", str(tmp_path / "rf.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["priors"]["pixelcnn"]["position"] == [2, 2] and (tmp_path / "rf.png").is_file()
    assert main(["receptive-field", "--prior", "pixelcnn", "--all", "--out", str(tmp_path / "x.png")]) == 2
    assert "exactly one of --prior, --model, --all" in capsys.readouterr().err


@pytest.mark.parametrize("arch,field,outside,blind", [
    (["attention=local_1d", "block=8", "num_layers=1"], 13, 39, 0),  # slot 52's block (48..55) and the previous one
    (["attention=strided", "stride=3"], 52, 0, 0),  # the previous 3 slots, then every 3rd: the whole past
    (["attention=local_2d", "block=[2,4]", "num_layers=1"], 25, 31, 0),  # rows 4..7 up to it, shifted by one slot
    (["attention=strided", "stride=3", "layout=strided_column", "num_layers=3"], 18, 0, 34),  # every 3rd, at any depth
    (["attention=local_1d", "block=2", "num_layers=1"], 3, 49, 0),  # 31 layers reach back to slot 0: no blind spot
])
def test_cli_shows_an_attention_patterns_field(arch, field, outside, blind, tmp_path, capsys):
    assert main(["receptive-field", "--prior", "transformer", "--preset", "tiny", "--shape", "1,8,8", "--symbols", "4",
                 "--position", "6,4", "--arch", *arch, "--out", str(tmp_path / "rf.png")]) == 0
    summary = json.loads(capsys.readouterr().out)["priors"]["transformer"]
    assert (summary["field"], summary["outside"], summary["blind"], summary["leaks"]) == (field, outside, blind, 0)


@pytest.mark.parametrize("arch,depth", [
    (dict(attention="full"), 1),
    (dict(attention="local_1d", block=2), 31),  # one block of 2 further back per layer: slot 63 reaches 0 at 31
    (dict(attention="local_1d", block=4, tokens="subpixel"), 47),  # 3·8·8 slots, 4 per layer: 191 reaches 0 at 47
    (dict(attention="strided", stride=8), 2),  # the previous 8, then every 8th: two layers cover the past
    (dict(attention="strided", stride=8, layout="strided_column"), 1),  # every 8th alone never grows: blind
])
def test_reach_depth_is_where_a_deeper_stack_stops_seeing_more(arch, depth):
    shape = (3, 8, 8) if arch.get("tokens") == "subpixel" else (1, 8, 8)
    prior = latentar.build_prior("transformer", shape, 4, preset="tiny", **arch)
    assert prior.reach_depth() == depth
    cycle = [layer_pattern(name, prior.arch, (8, 8 * prior.tokens_per_position)) for name in prior.arch.pattern_cycle]

    def field(layers: int) -> torch.Tensor:
        return slot_field([cycle[i % len(cycle)] for i in range(layers)], prior.num_slots)

    assert torch.equal(field(depth + 3 * len(cycle)), field(depth))  # no deeper stack sees more
    assert not torch.equal(field(depth - 1), field(depth))  # and one layer less sees less
