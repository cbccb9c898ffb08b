"""``python -m smime_companion`` runs the command-line interface."""

import sys

from smime_companion.cli import main

sys.exit(main())
