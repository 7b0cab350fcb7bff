"""``latentar.augment``: every id is an exact, invertible rearrangement; each type alone (and
rot90 × transpose, the square's 8 symmetries) is a group; bad types and ids are refused clearly."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from cli_run import run

import latentar
from latentar.augmentations import AUGMENTATIONS, SIZES, num_augmentations
from latentar.config import RecipeError, recipe_from_dict
from latentar.run_files import RUN_FILE
from latentar.training import TrainConfig
from latentar.training.objectives import augmented_prior_objective

SINGLE = [(name,) for name in AUGMENTATIONS]
PRODUCTS = [("rot90", "transpose"), ("transpose", "flip"), ("rot90", "channels", "jigsaw"), ("jigsaw", "flip")]


def distinct_grids(dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Two 3×4×4 grids whose entries all differ, so any rearrangement shows."""
    return torch.randperm(96, generator=torch.Generator().manual_seed(0)).view(2, 3, 4, 4).to(dtype)


@pytest.mark.parametrize("types", SINGLE + PRODUCTS, ids="-".join)
@pytest.mark.parametrize("dtype", [torch.long, torch.uint8])
def test_every_id_is_an_exact_invertible_rearrangement(types, dtype):
    x = distinct_grids(dtype)
    count = num_augmentations(types)
    seen = set()
    for a in range(count):
        y = latentar.augment(x, a, types)
        assert y.dtype == dtype and y.shape == x.shape
        assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values), "values changed"
        assert torch.equal(latentar.augment(y, a, types, inverse=True), x), f"id {a} is not undone"
        assert torch.equal(y, x) == (a == 0), "only id 0 is the identity"
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) == count, "two ids name the same transform"


@pytest.mark.parametrize("types", SINGLE + [("rot90", "transpose"), ("rot90", "flip")], ids="-".join)
def test_a_type_composes_within_itself(types):
    """Closure: doing id a then id b is some id c, and every id has an inverse id."""
    x = distinct_grids()
    count = num_augmentations(types)
    table = {tuple(latentar.augment(x, c, types).flatten().tolist()): c for c in range(count)}
    for a, b in itertools.product(range(count), repeat=2):
        twice = latentar.augment(latentar.augment(x, a, types), b, types)
        assert tuple(twice.flatten().tolist()) in table, f"{types}: {a} then {b} is no id"


def test_rotations_add_up_and_ids_are_mixed_radix():
    x = distinct_grids()
    for a, b in itertools.product(range(4), repeat=2):
        assert torch.equal(latentar.augment(latentar.augment(x, a, ("rot90",)), b, ("rot90",)),
                           latentar.augment(x, (a + b) % 4, ("rot90",)))
    assert torch.equal(latentar.augment(x, 1, ("rot90",)), torch.rot90(x, 1, dims=(2, 3)))
    # rot90 × transpose: id = 2·k + t, transpose applied after the rotation
    assert torch.equal(latentar.augment(x, 2 * 3 + 1, ("rot90", "transpose")),
                       torch.rot90(x, 3, dims=(2, 3)).transpose(2, 3))
    assert torch.equal(latentar.augment(x, 1, ("flip",)), x.flip(3))
    assert torch.equal(latentar.augment(x, 1, ("channels",)), x[:, [0, 2, 1]])


def test_one_id_per_grid():
    x = distinct_grids()
    ids = torch.tensor([3, 5])
    y = latentar.augment(x, ids, ("rot90", "transpose"))
    for b in range(2):
        assert torch.equal(y[b:b + 1], latentar.augment(x[b:b + 1], int(ids[b]), ("rot90", "transpose")))
    assert torch.equal(latentar.augment(y, ids, ("rot90", "transpose"), inverse=True), x)


def test_jigsaw_moves_whole_tiles():
    x = distinct_grids()
    y = latentar.augment(x, SIZES["jigsaw"] - 1, ("jigsaw",))  # tiles in reverse order (3, 2, 1, 0)
    assert torch.equal(y[..., :2, :2], x[..., 2:, 2:]) and torch.equal(y[..., 2:, :2], x[..., :2, 2:])


@pytest.mark.parametrize("types, shape, message", [
    (("rot90", "spin"), (1, 4, 4), "unknown augmentation|augmentations must be a list of strings out of"),
    (("flip", "flip"), (1, 4, 4), "twice"),
    (("rot90", "transpose", "flip"), (1, 4, 4), "keep two"),
    (("transpose",), (1, 4, 6), "square grid"),
    (("channels",), (1, 4, 4), "C = 1"),
    (("jigsaw",), (1, 3, 3), "even"),
    ("rot90", (1, 4, 4), "sequence of names|augmentations must be a list"),
])
def test_bad_types_are_refused(types, shape, message):
    with pytest.raises(ValueError, match=message):
        latentar.augment(torch.zeros(2, *shape, dtype=torch.long), 0, types)
    with pytest.raises(ValueError, match=message):
        latentar.build_prior("pixelcnn", shape, 2, preset="tiny", augmentations=types)


def test_bad_ids_are_refused():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        latentar.augment(x, torch.tensor([0, 8]), ("rot90", "transpose"))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        latentar.augment(x, torch.tensor([0]), ("rot90",))
    with pytest.raises(ValueError, match="integer tensor"):
        latentar.augment(x, torch.tensor([0.0, 1.0]), ("rot90",))


# ---- training and scoring ---------------------------------------------------------------
def test_train_config_reads_comma_separated_names_and_refuses_bad_ones():
    config = TrainConfig(augment="rot90, transpose", augment_rate=1.0)
    assert config.augment == ("rot90", "transpose") and config.prior_augmentations == ("rot90", "transpose")
    assert TrainConfig(augment=["flip"], augment_conditioning=False).prior_augmentations == ()
    with pytest.raises(ValueError, match="unknown augmentation"):
        TrainConfig(augment="rot90,spin")
    with pytest.raises(ValueError, match=r"augment_rate must be a number in \[0, 1\]"):
        TrainConfig(augment="rot90", augment_rate=1.5)


def test_recipes_take_augmentation_for_priors_only():
    raw = {"data": {"name": "mnist"}, "prior": {"name": "pixelcnn"},
           "prior_train": {"augment": ["rot90", "transpose"], "augment_rate": 0.25}}
    recipe = recipe_from_dict(raw)
    assert recipe.prior_train.augment == ("rot90", "transpose") and recipe.prior_train.augment_rate == 0.25
    build = recipe.prior.build_arguments({"shape": (1, 4, 4), "num_symbols": 2}, None,
                                         recipe.prior_train.prior_augmentations)
    assert build["augmentations"] == ("rot90", "transpose")
    with pytest.raises(RecipeError, match="vqvae_train.augment"):
        recipe_from_dict({**raw, "vqvae": {"preset": "mnist"}, "vqvae_train": {"augment": ["flip"]}})


@pytest.mark.parametrize("rate, conditioned", [(1.0, True), (0.0, True), (1.0, False)])
def test_the_objective_trains_on_augmented_grids(monkeypatch, rate, conditioned):
    torch.manual_seed(0)
    types = ("rot90", "transpose")
    prior = latentar.build_prior("pixelcnn", (1, 4, 4), 16, preset="tiny", augmentations=types if conditioned else ())
    x = torch.randint(0, 16, (32, 1, 4, 4))
    seen = {}
    monkeypatch.setattr(prior, "loss", lambda grids, cond: seen.update(x=grids, cond=cond) or torch.zeros(()))
    augmented_prior_objective(prior, (x, torch.zeros(32, dtype=torch.long)), augmentations=types, rate=rate,
                              conditioned=conditioned)
    ids = None
    for a in range(8):  # each grid is x under exactly one id
        match = (latentar.augment(x, a, types) == seen["x"]).flatten(1).all(1)
        ids = torch.where(match, a, -1) if ids is None else torch.where(match & (ids < 0), a, ids)
    assert (ids >= 0).all()
    assert (ids > 0).all() if rate == 1.0 else (ids == 0).all()
    if conditioned:
        assert torch.equal(seen["cond"].augment[ids > 0], ids[ids > 0])  # x's symmetric grids fit several ids
    else:
        assert seen["cond"].augment is None



def test_train_prior_with_augmentation_then_eval_per_id(capsys, tmp_path, image_folder):
    out = tmp_path / "run"
    common = ["--data", "image_folder", "--data-root", image_folder]
    train = ["train-prior", *common, "--prior", "pixelcnn", "--preset", "tiny", "--batch-size", 4, "--subset", 8,
             "--augment", "rot90,channels", "--augment-rate", 0.5, "--out", out]
    code, printed, err = run(capsys, *train, "--steps", 2, "--save-every", 2)
    assert code == 0, err
    prior = latentar.load(out / "model")
    assert prior.spec.augmentations == ("rot90", "channels") and prior.num_augmentations == 24
    identity = json.loads(printed)["bits_per_dim"]

    code, _, err = run(capsys, *train, "--steps", 3, "--resume")  # the same run, resumed
    assert code == 0, err
    assert latentar.load(out / "model").spec.augmentations == ("rot90", "channels")

    code, printed, err = run(capsys, "eval", "--model", out / "model", *common, "--augment", "all")
    assert code == 0, err
    scores = json.loads(printed)
    assert scores["augmentations"] == ["rot90", "channels"]
    assert sorted(map(int, scores["by_augment"])) == list(range(24))
    assert len({round(s["bits_per_dim"], 9) for s in scores["by_augment"].values()}) > 1
    code, printed, err = run(capsys, "eval", "--model", out / "model", *common)
    assert code == 0, err
    assert json.loads(printed)["bits_per_dim"] == pytest.approx(scores["by_augment"]["0"]["bits_per_dim"], rel=1e-6)
    assert json.loads(printed)["bits_per_dim"] != pytest.approx(identity)  # one more update since
    code, _, err = run(capsys, "eval", "--model", out / "model", *common, "--augment", 24)
    assert code == 2 and "--augment must be 'all' or an id in [0, 24)" in err


def test_augmentation_without_conditioning_builds_a_plain_prior(capsys, tmp_path, image_folder):
    out = tmp_path / "run"
    common = ["--data", "image_folder", "--data-root", image_folder]
    code, _, err = run(capsys, "train-prior", *common, "--prior", "pixelcnn", "--preset", "tiny", "--batch-size", 4,
                       "--subset", 8, "--steps", 1, "--augment", "flip", "--no-augment-conditioning", "--out", out)
    assert code == 0, err
    assert latentar.load(out / "model").spec.augmentations == ()
    code, _, err = run(capsys, "eval", "--model", out / "model", *common, "--augment", 0)
    assert code == 2 and "built without augmentations" in err


def test_resuming_a_run_from_before_augmentations(capsys, tmp_path, image_folder):
    """A run.json written before augmentations existed lacks the spec's ``augmentations``: it
    reads as their default (none), so the run resumes."""
    out = tmp_path / "run"
    train = ["train-prior", "--data", "image_folder", "--data-root", image_folder, "--prior", "pixelcnn",
             "--preset", "tiny", "--batch-size", 4, "--subset", 8, "--out", out]
    code, _, err = run(capsys, *train, "--steps", 1, "--save-every", 1)
    assert code == 0, err
    path = out / RUN_FILE
    recorded = json.loads(path.read_text())
    del recorded["model"]["spec"]["augmentations"]
    path.write_text(json.dumps(recorded))
    code, _, err = run(capsys, *train, "--steps", 2, "--resume")
    assert code == 0, err
    assert latentar.load(out / "model").spec.augmentations == ()
    code, _, err = run(capsys, *train, "--steps", 3, "--resume", "--augment", "flip")  # a different run
    assert code != 0 and "model.spec.augmentations is [] there, you asked for ['flip']" in err
