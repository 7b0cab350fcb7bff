"""``latentar report RUN_FOLDER...``: finished runs side by side, as a Markdown table or JSON."""

from __future__ import annotations

import json

from latentar.runs.report import markdown_table, run_row


def add_report_command(subparsers) -> None:
    parser = subparsers.add_parser("report", help="a table of finished runs side by side (markdown, or --json)")
    parser.add_argument("folders", nargs="+", metavar="RUN_FOLDER",
                        help="folders made by `latentar run`, `train-prior` or `train-vqvae`")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a Markdown table")
    parser.set_defaults(func=run_report)


def run_report(args) -> None:
    rows = [run_row(folder) for folder in args.folders]
    print(json.dumps(rows, indent=2) if args.json else markdown_table(rows))
