"""``python -m smime_companion`` runs the command-line interface."""

import sys

from smime_companion.cli import main

# Guarded: the opening workers are started with ``spawn``, which imports the parent's main
# module (as ``__mp_main__``) in each worker; it must not run the command line again there.
if __name__ == "__main__":
    sys.exit(main())
