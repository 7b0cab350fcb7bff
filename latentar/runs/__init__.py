"""Runs: where a stage (a VQ-VAE, the code grids of a dataset, a prior) is built, trained or
reused, and summarised, one way for every entry point.

    stages.py    the stages themselves: `vqvae_stage`, `palette_stage`, `codes_stage`, `prior_stage` (one
                 `train_stage`)
    single.py    one stage on its own: `train_vqvae`, `fit_palette`, `encode_splits`, `train_prior`
                 (``latentar train-vqvae``, ``fit-palette``, ``encode``, ``train-prior``)
    recipe.py    a recipe's stages in a row, then samples and curves: `run_recipe` (``latentar run``)
    summary.py   the stage record every stage writes (``summary.json``), and `read_summary`
    report.py    a row per run folder, from its stage records (``latentar report``)
    curves.py    ``curves.png``

    from latentar.runs import run_recipe, train_prior
    summary = run_recipe(load_recipe("recipes/mnist-vqvae-pixelsnail.toml"), "runs/main")
"""

from latentar.runs.recipe import run_recipe
from latentar.runs.single import encode_splits, fit_palette, train_prior, train_vqvae
from latentar.runs.stages import Rerun

__all__ = ["Rerun", "encode_splits", "fit_palette", "run_recipe", "train_prior", "train_vqvae"]
