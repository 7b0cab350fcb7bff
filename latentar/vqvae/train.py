"""Train a VQ-VAE on a dataset (``latentar train-vqvae``) and encode datasets with it (``latentar encode``).

    summary = train_vqvae("mnist", "runs/mnist-vqvae", TrainConfig(steps=1000, batch_size=128),
                          VQVAE.make_config("mnist"))
    summary["test"]["psnr"], summary["test"]["perplexity"]
    encode_splits("runs/mnist-vqvae/model", "mnist", "runs/mnist-codes")

A run folder is the trainer's (metrics.jsonl, checkpoints/, model/, done.json) plus
``summary.json`` (test MSE, PSNR, perplexity, fraction of codes used) and
``reconstructions.png`` (rows of test images, each above its reconstructions).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from einops import rearrange

from latentar.data.codes import encode_dataset
from latentar.evaluation import evaluate_vqvae
from latentar.saving import atomic_write_json
from latentar.training import TrainConfig, Trainer, vqvae_objective
from latentar.training.trainer import MODEL_DIR
from latentar.training.prior_run import first_items, open_dataset
from latentar.vqvae.model import VQVAE, VQVAEConfig

SUMMARY_FILE = "summary.json"
GRID_FILE = "reconstructions.png"
SPLITS = ("train", "test")


def train_vqvae(data: str, out_dir: str | Path, config: TrainConfig, vqvae: VQVAEConfig, *,
                data_root: str | Path | None = None, subset: int | None = None, resume: bool = False,
                overwrite: bool = False, eval_batch_size: int = 256, grid_images: int = 32, nrow: int = 8) -> dict:
    """Train a VQ-VAE on dataset ``data``, score the test split, write summary.json and the
    reconstruction grid into ``out_dir``; returns the summary. ``subset`` keeps the first
    N training images; ``resume`` continues the run in ``out_dir``, ``overwrite`` replaces it."""
    set_seed(config.seed)  # the initial weights
    train, test = open_dataset(data, "train", data_root), open_dataset(data, "test", data_root)
    model = VQVAE(train.shape, vqvae, levels=train.num_symbols)
    train = first_items(train, subset)

    def evaluate(model, accelerator):
        return evaluate_vqvae(model, test, accelerator, batch_size=eval_batch_size)

    trainer = Trainer(model, vqvae_objective, train, config, out_dir, evaluate=evaluate, overwrite=overwrite)
    result = trainer.fit(resume=resume)
    final = trainer.final_model()
    summary = {"data": data, "image_shape": list(final.image_shape), "vqvae": asdict(final.config),
               "grids": {level: list(shape) for level, shape in final.grid_shapes.items()},
               "fingerprint": final.fingerprint(), "train_items": len(train),
               "parameters": sum(p.numel() for p in final.parameters()), "steps": result["step"],
               "train": result["train"], "test": result["eval"]}
    if trainer.accelerator.is_main_process:
        atomic_write_json(Path(out_dir) / SUMMARY_FILE, summary)
        originals = torch.stack([test[i][0] for i in range(min(grid_images, len(test)))])  # (n, C, H, W)
        save_reconstructions(final, originals, Path(out_dir) / GRID_FILE, nrow=nrow)
    return summary


def reconstruction_rows(vqvae: VQVAE, originals: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """uint8 (n, C, H, W) -> (2·r·nrow, C, H, W): r rows of originals, each above a row of
    their reconstructions (the last row padded with white)."""
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    both = torch.stack([originals, vqvae.reconstruct(originals).cpu()])  # (2, n, C, H, W)
    n = originals.shape[0]
    pad = -n % nrow
    both = torch.cat([both, both.new_full((2, pad, *both.shape[2:]), vqvae.levels - 1)], 1)
    return rearrange(both, "two (r k) c h w -> (r two k) c h w", k=nrow)


def save_reconstructions(vqvae: VQVAE, originals: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Write `reconstruction_rows` as one PNG grid."""
    from latentar.sampling import save_grid

    return save_grid(reconstruction_rows(vqvae, originals, nrow), path, nrow=nrow, levels=vqvae.levels)


def encode_splits(vqvae_dir: str | Path, data: str, out_dir: str | Path, *, data_root: str | Path | None = None,
                  batch_size: int = 256, splits: tuple[str, ...] = SPLITS) -> dict:
    """Encode the ``splits`` of dataset ``data`` with the VQ-VAE saved in ``vqvae_dir``; returns the manifest."""
    vqvae = VQVAE.from_pretrained(vqvae_dir).eval()
    if torch.cuda.is_available():
        vqvae.cuda()
    manifest = {}
    for split in splits:
        dataset = open_dataset(data, split, data_root)
        manifest = encode_dataset(vqvae, dataset, out_dir, split, source=data, batch_size=batch_size)
    return manifest


# ---- the commands ----------------------------------------------------------------------
def add_train_vqvae_command(subparsers) -> None:
    from latentar.cli import TRAIN_OPTIONS

    parser = subparsers.add_parser("train-vqvae", help="train a VQ-VAE on a dataset; score its reconstructions")
    parser.add_argument("--data", required=True, help="dataset name, e.g. mnist (see `latentar data fetch`)")
    parser.add_argument("--out", required=True, help="run folder: metrics, checkpoints, model, summary.json")
    parser.add_argument("--preset", default="mnist", choices=sorted(VQVAE.presets),
                        help="architecture preset (default mnist); the options below override it")
    parser.add_argument("--codebook-size", type=int, help="K, codes in the (bottom) codebook")
    parser.add_argument("--downsample", type=int, help="n: codes are (H/2^n, W/2^n); 28×28 -> 7×7 is n=2")
    parser.add_argument("--hidden", type=int, help="channels of the encoder and decoder")
    parser.add_argument("--embed-dim", type=int, help="D, the width of a code vector")
    parser.add_argument("--codebook-update", choices=["ema", "loss"], help="how the codebook learns")
    parser.add_argument("--hierarchical", action="store_true", default=None,
                        help="VQ-VAE-2: add a top code grid at half the bottom resolution")
    parser.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                        help="any other VQVAEConfig field, e.g. --arch res_blocks=1 beta=0.5")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--data-root", default=None, help="where datasets live (default: the data root)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the earlier run's outputs in --out")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    default = TrainConfig(batch_size=128)
    for name, kind, extra in TRAIN_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(default, name),
                            dest=name, **extra)
    parser.set_defaults(func=run_train_vqvae)


ARCH_FLAGS = ("codebook_size", "downsample", "hidden", "embed_dim", "codebook_update", "hierarchical")


def run_train_vqvae(args) -> None:
    from latentar.cli import TRAIN_OPTIONS, parse_assignments

    overrides = parse_assignments(args.arch)
    overrides.update({name: getattr(args, name) for name in ARCH_FLAGS if getattr(args, name) is not None})
    config = TrainConfig(**{name: getattr(args, name) for name, _, _ in TRAIN_OPTIONS})
    summary = train_vqvae(args.data, args.out, config, VQVAE.make_config(args.preset, **overrides),
                          data_root=args.data_root, subset=args.subset, resume=args.resume,
                          overwrite=args.overwrite, eval_batch_size=args.eval_batch_size)
    if PartialState().is_main_process:
        print(json.dumps(summary["test"], indent=2))


def add_encode_command(subparsers) -> None:
    parser = subparsers.add_parser("encode", help="encode a dataset's splits to code grids with a trained VQ-VAE")
    parser.add_argument("--vqvae", required=True, help="a trained VQ-VAE: its run folder or RUN/model")
    parser.add_argument("--data", required=True, help="dataset name, e.g. mnist")
    parser.add_argument("--out", required=True, help="folder for the code grids and manifest.json")
    parser.add_argument("--split", choices=SPLITS, default=None, help="one split only (default: both)")
    parser.add_argument("--data-root", default=None, help="where datasets live (default: the data root)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.set_defaults(func=run_encode)


def run_encode(args) -> None:
    folder = Path(args.vqvae)
    if not (folder / "config.json").is_file() and (folder / MODEL_DIR / "config.json").is_file():
        folder = folder / MODEL_DIR  # a train-vqvae run folder
    manifest = encode_splits(folder, args.data, args.out, data_root=args.data_root, batch_size=args.batch_size,
                             splits=(args.split,) if args.split else SPLITS)
    print(json.dumps({"out": args.out, "vqvae_fingerprint": manifest["vqvae_fingerprint"],
                      "grids": manifest["grids"],
                      "counts": {s: e["count"] for s, e in manifest["splits"].items()}}, indent=2))
