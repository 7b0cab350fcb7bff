"""``latentar data fetch NAME``: download or extract a dataset and verify its checksums."""

from __future__ import annotations

from latentar import data
from latentar.commands.options import add_data_root


def add_data_command(subparsers) -> None:
    parser = subparsers.add_parser("data", help="manage datasets")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download or extract a dataset and verify its checksums")
    fetch.add_argument("name", help="dataset name, e.g. mnist, fashion_mnist, cifar10")
    add_data_root(fetch)
    fetch.set_defaults(func=run_data_fetch)


def run_data_fetch(args) -> None:
    print(data.describe_fetch(data.fetch(args.name, args.data_root)))
