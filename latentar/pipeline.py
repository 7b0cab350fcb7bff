"""Run a recipe end to end: VQ-VAE → codes → prior(s) → samples → report.

    recipe = load_recipe("recipes/mnist-vqvae-pixelsnail.toml")
    summary = run_recipe(recipe, "runs/main")

The run folder::

    recipe.json            the resolved recipe (every default filled in)
    vqvae/                 the VQ-VAE stage: metrics.jsonl, checkpoints/, model/, done.json
    codes/                 the dataset encoded to code grids, with its manifest
    prior/, bottom_prior/  the prior stage(s), laid out like vqvae/
    reconstructions.png    test images (odd rows) above their reconstructions (even rows)
    samples.png            prior samples decoded to images (one row per class when conditional)
    curves.png             training curves of every stage
    summary.json           test scores, VQ-VAE PSNR and code usage, wall time per stage

A stage whose ``done.json`` is in the folder is reused; a stage with checkpoints but no
``done.json`` resumes from its newest checkpoint. Pixel-mode recipes (no ``[vqvae]``)
run the prior stage only. Under ``accelerate launch`` every process trains, and only the
main process encodes, samples and writes the report. A live run holds the folder's
``.lock``; ``overwrite`` starts the folder afresh.
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from latentar.config import Recipe, RecipeError, recipe_to_dict
from latentar.data import first_items, load_dataset
from latentar.data.codes import write_codes_source
from latentar.data.subsets import dataset_attribute
from latentar.evaluation import evaluate_prior, evaluate_vqvae
from latentar.files import atomic_write, atomic_write_json, read_json
from latentar.generation import class_rows, generate
from latentar.images import save_grid
from latentar.plan import Plan, Stage, run_device, validate
from latentar.priors.base import build_prior
from latentar.runs import SUMMARY_FILE
from latentar.saving import load
from latentar.training import TrainConfig
from latentar.training.objectives import prior_objective, vqvae_objective
from latentar.training.previews import first_images, reconstruction_preview, sample_preview, save_reconstructions
from latentar.training.run_folder import differing_keys, hold, remove
from latentar.training.trainer import MODEL_DIR, Trainer, read_done, read_metrics
from latentar.vqvae import VQVAE

RECIPE_FILE = "recipe.json"
TIMING_FILE = "timing.json"  # in a stage folder: the wall time of the run that finished it
CODES_DIR = "codes"


def run_recipe(recipe: Recipe, out_dir: str | Path, *, overwrite: bool = False) -> dict:
    """Run every stage of ``recipe`` into ``out_dir`` (reusing finished ones); returns the summary.

    ``out_dir`` is locked for the whole run, so a second run into it is refused while this one
    lives; ``overwrite`` first removes what an earlier run wrote there (``RUN_OUTPUTS``)."""
    plan = validate(recipe)
    state = process_state()
    out = Path(out_dir)
    started = time.perf_counter()
    # both splits open (every image checked) before anything is written into the run folder
    data = [first_items(load_dataset(recipe.data.name, split, recipe.data.root, **recipe.data.options), n,
                        at_most=True)
            for split, n in (("train", recipe.data.train_limit), ("test", recipe.data.test_limit))]
    lock = hold(out, state, partial(remove, names=list(RUN_OUTPUTS)) if overwrite else None)
    try:
        return run_stages(recipe, plan, out, state, *data, started=started)
    finally:
        lock.release()


def run_stages(recipe: Recipe, plan: Plan, out: Path, state: PartialState, train: Dataset, test: Dataset, *,
               started: float) -> dict:
    """``run_recipe`` in the run folder it holds, on the opened splits; ``started``: perf_counter at its start."""
    check_previous_run(out, recipe)
    if state.is_main_process:
        atomic_write_json(out / RECIPE_FILE, recipe_to_dict(recipe))
    state.wait_for_everyone()
    summary: dict = {"mode": recipe.mode, "data": recipe.data.name, "image_shape": list(plan.image_shape)}
    vqvae, symbols = None, {stage.name: (train, test) for stage in plan.stages}
    if recipe.mode == "codes":
        vqvae, summary["vqvae"] = vqvae_stage(recipe, plan, train, test, out)
        symbols, summary["codes"] = codes_stage(vqvae, train, test, plan, out, state, recipe.data.name)
    priors = {}
    for stage, level in zip(plan.stages, vqvae.code_levels if vqvae is not None else [None]):
        priors[stage.name], summary[stage.name] = prior_stage(stage, *symbols[stage.name], out / stage.name,
                                                              vqvae, level, state, recipe.data.name,
                                                              top_prior=priors.get("prior"))
    if recipe.mode == "codes":  # the bits of an image's code grid(s), spread over its C·H·W pixels
        nats = sum(summary[stage.name]["nats_per_image"] for stage in plan.stages)
        summary["code_bits_per_pixel_dim"] = nats / (math.log(2) * math.prod(plan.image_shape))
    if state.is_main_process:
        tic = time.perf_counter()
        summary["images"] = write_images(recipe, plan, priors, vqvae, test, out)
        summary["images"]["wall_time_s"] = time.perf_counter() - tic
        plot_curves(stage_curves(out, ["vqvae"] * (recipe.vqvae is not None) + [s.name for s in plan.stages]),
                    out / "curves.png")
        summary["wall_time_s"] = time.perf_counter() - started
        summary["num_processes"] = state.num_processes
        atomic_write_json(out / SUMMARY_FILE, summary)
    state.wait_for_everyone()
    return summary


def process_state() -> PartialState:
    """This run's processes, as the trainer's Accelerator sees them: on a machine without
    CUDA (or with ``--cpu``), processes started by ``accelerate launch`` form a gloo group."""
    return PartialState(cpu=run_device().type == "cpu")


# the recipe sections each stage's output depends on
STAGE_INPUTS = {"vqvae": ("data", "vqvae", "vqvae_train"), CODES_DIR: ("data", "vqvae", "vqvae_train"),
                "prior": ("data", "vqvae", "vqvae_train", "prior", "prior_train")}
STAGE_INPUTS["bottom_prior"] = STAGE_INPUTS["prior"] + ("bottom_prior", "bottom_prior_train")
# what a run writes into its folder (`latentar run --overwrite` removes these)
RUN_OUTPUTS = (RECIPE_FILE, SUMMARY_FILE, *STAGE_INPUTS, "reconstructions.png", "samples.png", "curves.png")


def check_previous_run(out: Path, recipe: Recipe) -> None:
    """A stage already (partly) in ``out`` may only be reused if its inputs are unchanged."""
    path = out / RECIPE_FILE
    if not path.is_file():
        return
    changed = differing_keys(read_json(path), recipe_to_dict(recipe))
    for stage, inputs in STAGE_INPUTS.items():
        keys = [k for k in changed if k.split(".")[0] in inputs]
        if keys and (out / stage).exists():
            raise RecipeError(f"{out / stage} was made by another recipe (changed: {', '.join(keys[:4])}); "
                              f"choose another --out, or delete {out / stage} to redo that stage")


# ---- stages --------------------------------------------------------------------------
def train_stage(folder: Path, build, objective, train: Dataset, config: TrainConfig, evaluate, preview, dataset: str):
    """Reuse a finished stage, or train it (resuming from its checkpoints) -> (model, record);
    ``preview`` draws its grid every ``config.sample_every`` updates, ``dataset`` names its data."""
    done = read_done(folder)
    if done is not None:
        timing = read_json(folder / TIMING_FILE) if (folder / TIMING_FILE).is_file() else {}
        return load(folder / MODEL_DIR), {**done["eval"], "steps": done["step"], "reused": True, **timing}
    tic = time.perf_counter()
    set_seed(config.seed)  # the initial weights
    trainer = Trainer(build(), objective, train, config, folder, evaluate=evaluate, preview=preview, dataset=dataset)
    result = trainer.fit(resume=True)
    timing = {"wall_time_s": time.perf_counter() - tic}
    if trainer.accelerator.is_main_process:
        atomic_write_json(folder / TIMING_FILE, timing)
    model = trainer.final_model().eval()
    return model, {**result["eval"], "steps": result["step"], "reused": False, **timing}


def vqvae_stage(recipe: Recipe, plan: Plan, train: Dataset, test: Dataset, out: Path):
    """The trained VQ-VAE (from ``vqvae.path``, a finished stage, or training) and its test scores."""
    def evaluate(model, accelerator):
        return evaluate_vqvae(model, test, accelerator)

    if recipe.vqvae_path is not None:
        vqvae = VQVAE.from_pretrained(recipe.vqvae_path).eval()
        return vqvae, {**evaluate(vqvae, None), "path": recipe.vqvae_path, "wall_time_s": 0.0}
    build = lambda: VQVAE(plan.image_shape, recipe.vqvae, levels=plan.levels)  # noqa: E731
    shown = recipe.sampling.reconstructions or recipe.sampling.nrow  # the images of reconstructions.png
    preview = reconstruction_preview(first_images(test, shown), recipe.sampling.nrow)
    return train_stage(out / "vqvae", build, vqvae_objective, train, recipe.vqvae_train, evaluate, preview,
                       recipe.data.name)


def codes_stage(vqvae: VQVAE, train: Dataset, test: Dataset, plan: Plan, out: Path, state: PartialState,
                source: str):
    """Encode both splits (main process; reused when the manifest matches) -> prior datasets per stage."""
    from latentar.data.codes import CodeDataset, encode_dataset

    folder = out / CODES_DIR
    tic = time.perf_counter()
    if state.is_main_process:
        for split, data in (("train", train), ("test", test)):
            encode_dataset(vqvae, data, folder, split, source=source)
    state.wait_for_everyone()
    sets = {}
    for stage, level in zip(plan.stages, vqvae.code_levels):
        context = "top" if level == "bottom" else None
        sets[stage.name] = tuple(CodeDataset(folder, split, level=level, context=context, vqvae=vqvae)
                                 for split in ("train", "test"))
    return sets, {"wall_time_s": time.perf_counter() - tic, "folder": str(folder)}


def prior_stage(stage: Stage, train: Dataset, test: Dataset, folder: Path, vqvae: VQVAE | None,
                level: str | None, state: PartialState, dataset: str, top_prior=None):
    """Train (or reuse) one prior; a code prior's folder records the VQ-VAE whose codes it learned.
    Its previews decode with the VQ-VAE; a VQ-VAE-2's bottom prior draws under ``top_prior``'s codes."""
    def evaluate(model, accelerator):
        return evaluate_prior(model, test, accelerator)

    levels = vqvae.levels if vqvae is not None else dataset_attribute(train, "num_symbols")
    preview = sample_preview(vqvae, levels=levels, top_prior=top_prior if level == "bottom" else None)
    prior, record = train_stage(folder, lambda: build_prior(**stage.build), prior_objective, train,
                                stage.train, evaluate, preview, dataset)
    if vqvae is not None and state.is_main_process:
        write_codes_source(folder / MODEL_DIR, vqvae.fingerprint(), level)
    return prior, record


# ---- images and report ---------------------------------------------------------------
def write_images(recipe: Recipe, plan: Plan, priors: dict, vqvae: VQVAE | None, test: Dataset,
                 out: Path) -> dict:
    """samples.png (and reconstructions.png in code mode) -> their paths."""
    cfg, prior = recipe.sampling, priors["prior"]
    if prior.spec.num_classes is not None:
        labels, nrow = class_rows(prior.spec.num_classes, cfg.per_class), cfg.per_class
    else:
        labels, nrow = None, cfg.nrow
    n = cfg.n if labels is None else len(labels)
    drawn = generate(prior, vqvae, n, labels, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                     cfg_scale=cfg.cfg_scale, seed=cfg.seed,
                     bottom_prior=priors.get("bottom_prior"))
    paths = {"samples": str(save_grid(drawn.images, out / "samples.png", nrow=nrow, levels=plan.levels))}
    if vqvae is not None and cfg.reconstructions > 0:
        paths["reconstructions"] = str(save_reconstructions(vqvae, first_images(test, cfg.reconstructions),
                                                            out / "reconstructions.png", nrow=cfg.nrow))
    return paths


def stage_curves(out: Path, stages: list[str]) -> dict[str, list[tuple[float, float]]]:
    """{"<stage> <metric>": [(step, value)]}: each stage's training loss and its evaluations."""
    panels: dict[str, list[tuple[float, float]]] = {}
    for stage in stages:
        for record in read_metrics(out / stage):
            points = {"train loss": record.get("loss")}
            points.update({f"test {k}": v for k, v in record.get("eval", {}).items()
                           if k in ("bits_per_dim", "bits_per_code", "psnr")})
            for name, value in points.items():
                if isinstance(value, (int, float)):
                    panels.setdefault(f"{stage}: {name}", []).append((record["step"], value))
    return panels


def plot_curves(panels: dict[str, list[tuple[float, float]]], path: str | Path, *,
                size: tuple[int, int] = (360, 240)) -> Path:
    """Draw each named series of (step, value) points as a line panel, panels side by side."""
    W, H = size
    left, right, top, bottom = 58, 12, 24, 28  # margins around each plot box, pixels
    image = Image.new("RGB", (W * max(len(panels), 1), H), "white")
    draw = ImageDraw.Draw(image)
    for i, (title, points) in enumerate(panels.items()):
        x0, x1, y0, y1 = i * W + left, (i + 1) * W - right, top, H - bottom
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, 4), title, fill="black")
        points = [(float(s), float(v)) for s, v in points if math.isfinite(v)]
        if not points:
            continue
        steps, values = zip(*points)
        lo_s, hi_s, lo_v, hi_v = min(steps), max(steps), min(values), max(values)
        span_s, span_v = (hi_s - lo_s) or 1.0, (hi_v - lo_v) or 1.0
        xy = [(x0 + (s - lo_s) / span_s * (x1 - x0), y1 - (v - lo_v) / span_v * (y1 - y0)) for s, v in points]
        if len(xy) > 1:
            draw.line(xy, fill=(31, 119, 180), width=2)
        for x, y in xy if len(xy) < 20 else []:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(31, 119, 180))
        draw.text((i * W + 4, y0), f"{hi_v:.4g}", fill="black")
        draw.text((i * W + 4, y1 - 10), f"{lo_v:.4g}", fill="black")
        draw.text((x0, y1 + 6), f"{lo_s:g}", fill="black")
        draw.text((x1 - 60, y1 + 6), f"step {hi_s:g}", fill="black")
    path = Path(path)
    with atomic_write(path) as f:
        image.save(f, format="PNG")
    return path
