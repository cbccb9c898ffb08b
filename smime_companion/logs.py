"""Where library warnings go: into the log, never onto a user's terminal.

cryptography and other libraries warn about their own future (a deprecated algorithm, a
certificate they will refuse one day). Those warnings are about our dependencies, not something
the person running a command can act on, and what they concern is reported by us in words of our
own (e.g. a signer's ``notes``). The command line and its worker processes call
:func:`route_library_warnings` once at start.
"""

from __future__ import annotations

import logging


def route_library_warnings(verbose: bool) -> None:
    """Turn Python warnings into records of the ``py.warnings`` logger, kept only with
    ``verbose`` (``-v``, for a developer's eyes), dropped otherwise."""
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.INFO if verbose else logging.CRITICAL + 1)
