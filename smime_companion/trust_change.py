"""Trust changes take effect: when the anchors or the TOFU policy differ from those the cache was
judged under, every signed message is opened again from its raw original and every stored
certificate's trust is judged again.

What the cache was judged under is a fingerprint (:func:`trust_fingerprint`) kept in
``trust.sha256`` in the cache directory; the daemon compares it on start and on reload.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509

from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.entry_derivation import entry_maker
from smime_companion.core.model import OpenResult
from smime_companion.errors import SmimeCompanionError
from smime_companion.harvest import CertHarvester, rejudge_store
from smime_companion.store.cache import Cache
from smime_companion.sync.protocols import Harvester

log = logging.getLogger(__name__)

TRUST_FILE = "trust.sha256"


def rejudge_if_changed(
    cache_dir: Path,
    cache: Cache,
    open_raw: Callable[[bytes, datetime], OpenResult],
    harvester: Harvester | None,
    anchors: Sequence[x509.Certificate],
    tofu: Sequence[str],
) -> int:
    """When ``anchors`` or ``tofu`` differ from the fingerprint recorded in ``cache_dir``, open
    every signed message of ``cache`` again with ``open_raw`` (harvesting its signers as the
    sync does), judge the harvester's stored certificates again, and record the new
    fingerprint. Returns how many messages were re-judged (0 when nothing changed). Errors of
    the cache or store raise (one line)."""
    path = cache_dir / TRUST_FILE
    stamp = trust_fingerprint(anchors, tofu)
    try:
        previous = path.read_text().strip()
    except OSError:
        previous = None
    if previous == stamp:
        return 0
    ids = cache.signed_messages()
    count = 0
    if ids and previous is None:
        log.info("no record of the trust configuration: judging %d signed messages", len(ids))
    elif ids:
        log.info("trust anchors or TOFU policy changed: judging %d signed messages", len(ids))
    if ids:
        if isinstance(harvester, CertHarvester):
            harvester.forget_sightings()
        known = None
        if harvester is not None:  # harvested as the sync does, then revised
            open_raw = _harvesting(open_raw, harvester)
            known = harvester.known_revoked
        count = cache.rebuild(entry_maker(open_raw, known), ids)
    if isinstance(harvester, CertHarvester):
        changed = rejudge_store(harvester.store, anchors, tofu)
        if changed:
            log.info("trust of %d stored certificates judged again", changed)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(stamp + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return count


def trust_fingerprint(anchors: Sequence[x509.Certificate], tofu: Sequence[str]) -> str:
    """SHA-256 of what decides trust: the anchors (by fingerprint, in any order) and the TOFU
    policy. Equal fingerprints mean every stored verdict still stands."""
    digest = hashlib.sha256()
    for fingerprint in sorted({fingerprint_sha256(a) for a in anchors}):
        digest.update(f"anchor {fingerprint}\n".encode())
    for pattern in sorted(set(tofu)):
        digest.update(f"tofu {pattern}\n".encode())
    return digest.hexdigest()


def _harvesting(
    open_raw: Callable[[bytes, datetime], OpenResult], harvester: Harvester
) -> Callable[[bytes, datetime], OpenResult]:
    """``open_raw`` that also hands each result's signers to ``harvester`` (as the sync does),
    so a re-judged message's certificates are judged with it."""

    def open_and_harvest(raw: bytes, at: datetime) -> OpenResult:
        result = open_raw(raw, at)
        try:
            harvester.harvest(result, result.header("Message-ID"), at)
        except SmimeCompanionError as exc:  # the verdict stands; the store says why not
            log.warning("re-judging: cannot record a signer: %s", exc)
        return result

    return open_and_harvest
