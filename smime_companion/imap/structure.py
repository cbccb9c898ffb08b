"""Pure helpers on IMAP values: UIDs and sequence sets, BODYSTRUCTURE, flags, response kinds.

No connection and no IMAP library here: values in, values out (the adapters in
:mod:`~smime_companion.imap.mailbox` and :mod:`~smime_companion.imap.responses` use them, and
tests call them directly).
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard

from smime_companion.errors import ImapError
from smime_companion.session import bytes_of, text_of

log = logging.getLogger(__name__)

# UIDs per FETCH/SEARCH command: keeps command lines well under servers' limits (Dovecot: 64 KB).
UID_CHUNK = 1000
# RFC 3501/9051: UIDs, UIDVALIDITY and sizes are 32-bit unsigned (nz-number, number);
# RFC 7162: MODSEQ values are 63-bit.
UID_MAX = 2**32 - 1
MODSEQ_MAX = 2**63 - 1

_SMIME_TYPES = {
    ("application", "pkcs7-mime"),
    ("application", "x-pkcs7-mime"),
}
_SMIME_SIGNATURE_PROTOCOLS = {"application/pkcs7-signature", "application/x-pkcs7-signature"}


def valid_uid(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a UID a server may send: an int in 1..2^32-1."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= UID_MAX


def valid_uids(values: Iterable[Any], where: str, label: str) -> list[int]:
    """The valid UIDs of ``values`` (ints or digit strings), logging once how many were not."""
    out: list[int] = []
    bad = 0
    for value in values:
        try:
            uid = int(value)
        except (TypeError, ValueError):
            bad += 1
            continue
        if valid_uid(uid):
            out.append(uid)
        else:
            bad += 1
    if bad:
        log.warning("%s: %s: ignored %d UIDs outside 1..%d", label, where, bad, UID_MAX)
    return out


def bounded(value: Any, low: int, high: int) -> int | None:
    """``value`` as an int when it is one within low..high, else None."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def sequence_set(uids: Iterable[int]) -> bytes:
    """An IMAP sequence set for these UIDs with runs as ranges: [1, 2, 3, 7] -> ``b"1:3,7"``."""
    runs: list[str] = []
    start = previous = -1
    for uid in sorted(set(uids)):
        if uid != previous + 1:
            if previous >= 0:
                runs.append(f"{start}:{previous}" if previous > start else str(start))
            start = uid
        previous = uid
    if previous >= 0:
        runs.append(f"{start}:{previous}" if previous > start else str(start))
    return ",".join(runs).encode("ascii")


def is_smime_structure(structure: Any) -> bool:
    """True when a BODYSTRUCTURE (as imapclient parses it) is S/MIME at the top level:
    application/(x-)pkcs7-mime, multipart/signed with a PKCS#7 signature protocol, or an
    application/octet-stream named ``*.p7m`` (as some gateways send enveloped mail)."""
    if not isinstance(structure, (list, tuple)) or not structure:
        return False
    if isinstance(structure[0], list):  # multipart: ([parts...], subtype, params, ...)
        subtype = text_of(structure[1]).lower() if len(structure) > 1 else ""
        params = _params(structure[2]) if len(structure) > 2 else {}
        return subtype == "signed" and params.get("protocol", "").lower() in (
            _SMIME_SIGNATURE_PROTOCOLS
        )
    if len(structure) < 3:
        return False
    media = (text_of(structure[0]).lower(), text_of(structure[1]).lower())
    if media in _SMIME_TYPES:
        return True
    params = _params(structure[2])
    if media == ("application", "octet-stream"):
        name = params.get("name", "")
        if not name and len(structure) > 8:
            disposition = structure[8]
            if isinstance(disposition, (list, tuple)) and len(disposition) > 1:
                name = _params(disposition[1]).get("filename", "")
        return name.lower().endswith(".p7m")
    return False


def _params(raw: Any) -> dict[str, str]:
    if not isinstance(raw, (list, tuple)):
        return {}
    items = [text_of(x) for x in raw]
    return {items[i].lower(): items[i + 1] for i in range(0, len(items) - 1, 2)}


def parse_vanished(line: bytes) -> set[int]:
    """UIDs in a VANISHED response body: ``(EARLIER) 3:5,9`` -> {3, 4, 5, 9}."""
    text = line.decode("ascii", "replace")
    text = text.split(")", 1)[1] if text.lstrip().startswith("(") else text
    return uid_set(text.strip())


def esearch_all(answer: bytes, limit: int) -> array[int]:
    """The UIDs of an ESEARCH answer's ``ALL`` (``(TAG "a1") UID ALL 1:3,7``), ascending, as
    4-byte integers; empty when it has none (nothing matched). Raises ImapError when the set is
    malformed, names a UID outside 1..2^32-1, or holds more than ``limit`` UIDs."""
    words = answer.split()
    upper = [w.upper() for w in words]
    if b"ALL" not in upper:
        return array("I")
    text = text_of(words[upper.index(b"ALL") + 1]) if upper.index(b"ALL") + 1 < len(words) else ""
    ranges: list[tuple[int, int]] = []
    total = 0
    for part in filter(None, text.split(",")):
        low, _, high = part.partition(":")
        try:
            a, b = int(low), int(high or low)
        except ValueError:
            raise ImapError(f"server sent a malformed UID set {text[:60]!r}") from None
        if not (valid_uid(a) and valid_uid(b)):
            raise ImapError(f"server sent a UID outside 1..{UID_MAX} in {part[:40]!r}")
        a, b = min(a, b), max(a, b)
        total += b - a + 1
        if total > limit:
            raise ImapError(f"server answered more UIDs than the folder holds ({limit})")
        ranges.append((a, b))
    out = array("I")
    for a, b in sorted(ranges):
        if out and a <= out[-1]:  # overlapping ranges: each UID once
            a = out[-1] + 1
        out.extend(range(a, b + 1))
    return out


def uid_set(text: str) -> set[int]:
    """Parse an IMAP sequence set of UIDs (``1:3,7``). Raises ImapError when malformed."""
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition(":")
        try:
            a, b = int(low), int(high or low)
        except ValueError:
            raise ImapError(f"server sent a malformed UID set {text[:60]!r}") from None
        if not (valid_uid(a) and valid_uid(b)):
            raise ImapError(f"server sent a UID outside 1..{UID_MAX} in {part[:40]!r}")
        if a > b:
            a, b = b, a
        if b - a > 10_000_000:
            raise ImapError(f"server sent an implausible UID range {part!r}")
        out.update(range(a, b + 1))
    return out


def is_change(response: Any) -> bool:
    if not isinstance(response, tuple) or len(response) < 2:
        return False
    kind = bytes_of(response[1]).upper() if isinstance(response[1], (bytes, str)) else b""
    head = bytes_of(response[0]).upper() if isinstance(response[0], (bytes, str)) else b""
    return kind in (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT") or head == b"VANISHED"


def flags_of(raw: Iterable[Any]) -> tuple[str, ...]:
    """A FETCH's FLAGS as text, without ``\\Recent``: that one says which session saw the
    message first (and IMAP4rev2 dropped it), not something about the message, and keeping it
    would make every pass after another client's look like a flag change."""
    return tuple(flag for f in raw if (flag := text_of(f)).lower() != "\\recent")


def aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def chunks(items: Sequence[int], size: int) -> Iterable[list[int]]:
    """``items`` in consecutive lists of at most ``size``."""
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
