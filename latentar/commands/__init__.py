"""The command line's commands: one module per command group, each with ``add_<name>_command
(subparsers)`` functions that set ``func=`` to the function running the command, and
`options` for what they share. The only package with argparse code; `latentar.cli` builds
the parser from these modules and dispatches."""
