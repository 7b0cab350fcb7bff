"""Run a recipe end to end: VQ-VAE → codes → prior(s) → samples → report, a stage after another
(`latentar.runs.stages`).

    recipe = load_recipe("recipes/mnist-vqvae-pixelsnail.toml")
    summary = run_recipe(recipe, "runs/main")

The run folder (file names in `latentar.run_files`)::

    recipe.json            the resolved recipe (every default filled in)
    vqvae/                 the VQ-VAE stage: metrics.jsonl, checkpoints/, model/, done.json, summary.json
    palette/               or, with [palette], the fitted colour palette: model/, summary.json
    codes/                 the dataset encoded to code grids, with its manifest and summary.json
    prior/, bottom_prior/  the prior stage(s), laid out like vqvae/
    reconstructions.png    test images (odd rows) above their reconstructions (even rows)
    samples.png            prior samples decoded to images (one row per class when conditional)
    curves.png             training curves of every stage
    classifier/            [metrics] features = "classifier": the dataset classifier of the sample metrics
    summary.json           the run summary: a stage record per stage (`latentar.runs.summary`)

A stage whose ``done.json`` is in the folder is reused; a stage with checkpoints but no
``done.json`` resumes from its newest checkpoint. Pixel-mode recipes (no ``[vqvae]``)
run the prior stage only. Under ``accelerate launch`` every process trains, and only the
main process encodes, samples and writes the report. A live run holds the folder's
``.lock``; ``overwrite`` starts the folder afresh.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from accelerate import PartialState
from torch.utils.data import Dataset

from latentar.config import Recipe, RecipeError, recipe_from_dict, recipe_to_dict
from latentar.data import first_items, load_dataset
from latentar.data.codes import CodeDataset
from latentar.data.subsets import dataset_size
from latentar.files import atomic_write_json, read_json
from latentar.generation import class_rows, generate
from latentar.images import save_grid
from latentar.plan import Plan, run_device, sampling_device, validate
from latentar.priors import Prior
from latentar.run_files import CODES_DIR, CURVES_FILE, RECIPE_FILE, RECONSTRUCTIONS_FILE, SAMPLES_FILE, SUMMARY_FILE
from latentar.runs.curves import plot_curves, stage_curves
from latentar.runs.metrics import CLASSIFIER_DIR, classifier_stage, measure_run, report_metrics
from latentar.runs.stages import RECIPE_RERUN, Splits, codes_stage, given_vqvae, palette_stage, prior_stage, vqvae_stage
from latentar.runs.summary import FORMAT
from latentar.training.config import precision_in_effect
from latentar.training.previews import first_images, save_reconstructions
from latentar.training.run_folder import differing_keys, hold, refuse_links, remove
from latentar.vqvae import Tokenizer

# the recipe sections each stage's output depends on
STAGE_INPUTS = {"vqvae": ("data", "vqvae", "vqvae_train"), "palette": ("data", "palette"),
                CODES_DIR: ("data", "vqvae", "vqvae_train", "palette"),
                "prior": ("data", "vqvae", "vqvae_train", "palette", "prior", "prior_train")}
STAGE_INPUTS["bottom_prior"] = STAGE_INPUTS["prior"] + ("bottom_prior", "bottom_prior_train")
# a section, or one key of it
STAGE_INPUTS[CLASSIFIER_DIR] = ("data", "metrics.classifier_steps", "metrics.classifier_width")
# what a run writes into its folder (`latentar run --overwrite` removes these)
RUN_OUTPUTS = (RECIPE_FILE, SUMMARY_FILE, *STAGE_INPUTS, RECONSTRUCTIONS_FILE, SAMPLES_FILE, CURVES_FILE)


def run_recipe(recipe: Recipe, out_dir: str | Path, *, overwrite: bool = False) -> dict:
    """Run every stage of ``recipe`` into ``out_dir`` (reusing finished ones); returns the run summary.

    ``out_dir`` is locked for the whole run, so a second run into it is refused while this one
    lives; ``overwrite`` first removes what an earlier run wrote there (``RUN_OUTPUTS``)."""
    plan = validate(recipe)
    state = process_state()
    out = Path(out_dir)
    started = time.perf_counter()
    # both splits open (every image checked) before anything is written into the run folder
    train, test = (first_items(load_dataset(recipe.data.name, split, recipe.data.root, **recipe.data.options), n,
                               at_most=True)
                   for split, n in (("train", recipe.data.train_limit), ("test", recipe.data.test_limit)))
    lock = hold(out, state, partial(remove if overwrite else refuse_links, names=list(RUN_OUTPUTS)))
    try:
        return run_stages(recipe, plan, out, state, Splits(recipe.data.name, train, test), started=started)
    finally:
        lock.release()


def run_stages(recipe: Recipe, plan: Plan, out: Path, state: PartialState, images: Splits, *,
               started: float) -> dict:
    """``run_recipe`` in the run folder it holds, on the opened ``images``; ``started``: perf_counter at its start."""
    check_previous_run(out, recipe)
    if state.is_main_process:
        atomic_write_json(out / RECIPE_FILE, recipe_to_dict(recipe))
    state.wait_for_everyone()
    summary: dict = {"format": FORMAT, "mode": recipe.mode, "data": recipe.data.name,
                     "image_shape": list(plan.image_shape)}
    vqvae, symbols = None, {stage.name: images for stage in plan.stages}
    if recipe.mode == "codes":
        vqvae, record = recipe_vqvae(recipe, images, out)
        summary[record["stage"]] = record  # "vqvae" or "palette"
        symbols, summary["codes"] = recipe_codes(vqvae, images, plan, out, state)
    priors: dict[str, Prior] = {}
    for stage, level in zip(plan.stages, vqvae.code_levels if vqvae is not None else [None]):
        priors[stage.name], summary[stage.name] = prior_stage(
            out / stage.name, symbols[stage.name], stage.config, stage.build, stage.train, vqvae=vqvae,
            source=None if vqvae is None or level is None else (vqvae.fingerprint(), level, vqvae.model_type),
            rerun=RECIPE_RERUN,
            top_prior=priors["prior"] if level == "bottom" else None)
    tic = time.perf_counter()
    classifier = classifier_stage(recipe, out, dataset_size(images.train))  # every process trains it
    if classifier is not None:
        classifier["wall_time_s"] = time.perf_counter() - tic
    if state.is_main_process:
        tic = time.perf_counter()
        summary["images"] = write_images(recipe, plan, priors, vqvae, images.test, out)
        summary["images"]["wall_time_s"] = time.perf_counter() - tic
        if recipe.metrics.n:
            tic = time.perf_counter()
            summary["metrics"] = measure_run(recipe, plan, priors, vqvae, images, classifier)
            summary["metrics"]["wall_time_s"] = time.perf_counter() - tic
            report_metrics(summary["metrics"], out / "prior", priors["prior"], recipe.prior_train,
                           summary["prior"]["steps"])
        plot_curves(stage_curves(out, ["vqvae"] * (recipe.vqvae is not None) + [s.name for s in plan.stages]),
                    out / CURVES_FILE)
        summary["wall_time_s"] = time.perf_counter() - started
        summary["num_processes"] = state.num_processes
        atomic_write_json(out / SUMMARY_FILE, summary)
    state.wait_for_everyone()
    return summary


def process_state() -> PartialState:
    """This run's processes, as the trainer's Accelerator sees them: on a machine without
    CUDA (or with ``--cpu``), processes started by ``accelerate launch`` form a gloo group."""
    return PartialState(cpu=run_device().type == "cpu")


def check_previous_run(out: Path, recipe: Recipe) -> None:
    """A stage already (partly) in ``out`` may only be reused if its inputs are unchanged. The
    recorded recipe is read back as a recipe first, so a setting it predates counts as its default."""
    path = out / RECIPE_FILE
    if not path.is_file():
        return
    recorded = read_json(path)
    try:
        recorded = recipe_to_dict(recipe_from_dict(recorded))
    except (ValueError, TypeError):  # not a recipe this latentar reads: compared as written
        pass
    changed = differing_keys(in_effect(recorded), in_effect(recipe_to_dict(recipe)))
    for stage, inputs in STAGE_INPUTS.items():
        keys = [k for k in changed if any(k == key or k.startswith(key + ".") for key in inputs)]
        if keys and (out / stage).exists():
            raise RecipeError(f"{out / stage} was made by another recipe (changed: {', '.join(keys[:4])}); "
                              f"choose another --out, or delete {out / stage} to redo that stage")


def in_effect(recipe: dict) -> dict:
    """A recipe's dict with each stage's mixed precision as the run would train in it
    (`precision_in_effect`): Accelerate's setting (None) and the "no" it resolves to are one."""
    return {section: {**values, "mixed_precision": precision_in_effect(values.get("mixed_precision"))}
            if section.endswith("_train") and isinstance(values, dict) else values
            for section, values in recipe.items()}


def recipe_vqvae(recipe: Recipe, images: Splits, out: Path) -> tuple[Tokenizer, dict]:
    """The recipe's tokenizer (``vqvae.path``, a finished stage, or trained or fitted now) and its record."""
    if recipe.vqvae_path is not None:
        return given_vqvae(recipe.vqvae_path, images, sampling_device(recipe))
    if recipe.palette is not None:
        return palette_stage(out / "palette", images, recipe.palette, reuse=RECIPE_RERUN.reuse)
    shown = recipe.sampling.reconstructions or recipe.sampling.nrow  # the images of reconstructions.png
    assert recipe.vqvae is not None and recipe.vqvae_train is not None  # code mode: [vqvae] with [vqvae_train]
    return vqvae_stage(out / "vqvae", images, recipe.vqvae, recipe.vqvae_train, shown=shown,
                       nrow=recipe.sampling.nrow, rerun=RECIPE_RERUN)


def recipe_codes(vqvae: Tokenizer, images: Splits, plan: Plan, out: Path,
                 state: PartialState) -> tuple[dict[str, Splits], dict]:
    """Encode both splits (main process; reused when the manifest matches) -> ({prior stage: its
    code splits}, the codes record)."""
    folder = out / CODES_DIR
    if state.is_main_process:
        codes_stage(vqvae, {"train": images.train, "test": images.test}, folder, images.name)
    state.wait_for_everyone()
    sets = {}
    for stage, level in zip(plan.stages, vqvae.code_levels):
        context = "top" if level == "bottom" else None
        splits = (CodeDataset(folder, split, level=level, context=context, vqvae=vqvae) for split in ("train", "test"))
        sets[stage.name] = Splits(images.name, *splits)
    return sets, read_json(folder / SUMMARY_FILE)


def write_images(recipe: Recipe, plan: Plan, priors: dict, vqvae: Tokenizer | None, test: Dataset,
                 out: Path) -> dict:
    """samples.png (and reconstructions.png in code mode), drawn on ``sampling.device`` -> their paths."""
    cfg, device = recipe.sampling, sampling_device(recipe)
    priors = {name: model.to(device) for name, model in priors.items()}
    vqvae = None if vqvae is None else vqvae.to(device)
    prior = priors["prior"]
    if prior.spec.num_classes is not None:
        labels, nrow = class_rows(prior.spec.num_classes, cfg.per_class), cfg.per_class
    else:
        labels, nrow = None, cfg.nrow
    n = cfg.n if labels is None else len(labels)
    drawn = generate(prior, vqvae, n, labels, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                     cfg_scale=cfg.cfg_scale, seed=cfg.seed, bottom_prior=priors.get("bottom_prior"))
    paths = {"samples": str(save_grid(drawn.images, out / SAMPLES_FILE, nrow=nrow, levels=plan.levels))}
    if vqvae is not None and cfg.reconstructions > 0:
        paths["reconstructions"] = str(save_reconstructions(vqvae, first_images(test, cfg.reconstructions),
                                                            out / RECONSTRUCTIONS_FILE, nrow=cfg.nrow))
    return paths
