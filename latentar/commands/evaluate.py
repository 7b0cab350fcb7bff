"""``latentar eval``: score a saved prior on a dataset split (JSON out). Under ``accelerate launch``
each of P processes scores every P-th item and the sums are added up: the scores of one process."""

from __future__ import annotations

import json

from latentar.commands.options import (
    add_data_options,
    add_device,
    add_max_memory,
    check_positive,
    data_config,
    is_main,
    load_model,
    process_device,
)
from latentar.data import load_dataset
from latentar.evaluation import evaluate_prior
from latentar.masks import MASK_HELP, region
from latentar.priors import Prior


def add_eval_command(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a saved prior on a dataset split (JSON out)")
    parser.add_argument("--model", required=True, help="a saved prior folder (e.g. RUN/model)")
    parser.add_argument("--data", required=True, help="dataset name, or a code folder made by `latentar encode`")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--batch-size", type=int, default=256,
                        help="grids read per batch; a batch is scored in parts when it does not fit the memory cap")
    parser.add_argument("--mask", metavar="REGION",
                        help=f"score this region of every grid given the rest: {MASK_HELP.replace('%', '%%')}, "
                             "all in the prior's grid units (codes for a code prior)")
    parser.add_argument("--augment", metavar="ID|all",
                        help="a prior trained with distribution augmentation: score the split transformed by "
                             "augmentation ID under that ID, log p(augment(x) | ID), or every ID in turn (all); "
                             "default: the data as they are, under the identity (ID 0)")
    add_data_options(parser)
    add_device(parser)
    add_max_memory(parser)
    parser.set_defaults(func=run_eval)


def run_eval(args) -> None:
    check_positive(args.batch_size, "--batch-size")
    device, processes = process_device(args)
    model = load_model(args.model, Prior, "--model", device, refusal="; `latentar eval` scores priors")
    data = data_config(args)
    dataset = load_dataset(data.name, args.split, data.root, **data.options)
    _, H, W = model.spec.shape
    unknown = None if args.mask is None else region(args.mask, (H, W), (H, W))
    known = None if unknown is None else ~unknown.to(device)
    if args.augment is None:
        scores = evaluate_prior(model, dataset, processes, batch_size=args.batch_size, known=known)
    else:  # log p(augment(x) | id) per id
        scores = {"augmentations": list(model.spec.augmentations), "by_augment": {
            str(i): evaluate_prior(model, dataset, processes, batch_size=args.batch_size, known=known, augment_id=i)
            for i in augment_ids(args.augment, model)}}
    if unknown is not None:  # nats and bits of the region given the rest
        scores = {"region": args.mask, "region_positions": int(unknown.sum()), **scores}
    if is_main(processes):
        print(json.dumps({**scores, "num_processes": 1 if processes is None else processes.num_processes}, indent=2))


def augment_ids(text: str, prior: Prior) -> list[int]:
    """--augment ID|all -> the augmentation ids to score."""
    count = prior.num_augmentations
    if not prior.spec.augmentations:
        raise ValueError(f"--augment {text}: this prior was built without augmentations (it was not trained with "
                         "distribution augmentation, or not told the ids)")
    if text == "all":
        return list(range(count))
    if not text.isdigit() or int(text) >= count:
        raise ValueError(f"--augment must be 'all' or an id in [0, {count}) of {' × '.join(prior.spec.augmentations)}, "
                         f"got {text!r}")
    return [int(text)]
