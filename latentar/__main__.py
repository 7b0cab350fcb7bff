"""``python -m latentar`` runs the command line."""

import sys

from latentar.cli import main

sys.exit(main())
