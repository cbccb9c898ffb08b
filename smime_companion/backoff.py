"""How long to wait before trying a server again: exponential backoff with jitter.

Every connection failure backs off from 1 s doubling to 5 minutes, each delay drawn between
half and all of it, so many clients do not reconnect in step after a server restart. A refused
login backs off far harder (:func:`auth_backoff`): servers (Dovecot's auth penalty, Microsoft
365, fail2ban) lock or slow down an account after a handful of failures within minutes.
"""

from __future__ import annotations

import random

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
AUTH_BACKOFF_BASE_SECONDS = 300.0
AUTH_BACKOFF_CAP_SECONDS = 3600.0


class Backoff:
    """Exponential backoff with jitter: the n-th delay is drawn from [d/2, d] with
    d = min(cap, base * 2**n); :meth:`reset` after a success."""

    def __init__(
        self,
        base: float = BACKOFF_BASE_SECONDS,
        cap: float = BACKOFF_CAP_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay to wait before the next attempt (and count one more failure)."""
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        # Jitter spreads the reconnects of many clients after a server restart.
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from the base delay (after a success)."""
        self.failures = 0


def auth_backoff() -> Backoff:
    """The backoff after a refused login (minutes, not seconds)."""
    return Backoff(AUTH_BACKOFF_BASE_SECONDS, AUTH_BACKOFF_CAP_SECONDS)
