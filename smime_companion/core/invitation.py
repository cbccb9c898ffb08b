"""A meeting invitation (an iCalendar text/calendar part, RFC 5545) read into what a person
needs to see of it: what, when, where, who invites, and whether it is a request, an answer or
a cancellation.

Outlook, Exchange and Google Calendar send an invitation as a text/calendar part beside the
text; webmail shows it as a card. Inside S/MIME only this reader can. Pure: text in, values out;
one pass over the lines, the first event only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 5546 methods, as a person would say them.
_METHODS = {
    "REQUEST": "Invitation",
    "CANCEL": "Cancelled",
    "REPLY": "Answer to an invitation",
    "COUNTER": "New time proposed",
    "PUBLISH": "Event",
}
# A text/calendar part longer than this is not read for a card (a calendar export, not an
# invitation); it stays an attachment.
MAX_INVITATION_CHARS = 256 * 1024


@dataclass(frozen=True)
class Invitation:
    """What an invitation says, each as written ("" when it does not say)."""

    kind: str  # "Invitation", "Cancelled", ... (from METHOD)
    summary: str
    start: str
    end: str
    location: str
    organizer: str


def read_invitation(text: str) -> Invitation | None:
    """The first event of an iCalendar text, or None when it holds none."""
    if len(text) > MAX_INVITATION_CHARS:
        return None
    method = ""
    event: dict[str, str] = {}
    in_event = False
    for line in _unfolded(text):
        name, params, value = _content_line(line)
        if name == "METHOD" and not method:
            method = value.strip().upper()
        elif name == "BEGIN" and value.strip().upper() == "VEVENT":
            in_event = True
        elif name == "END" and value.strip().upper() == "VEVENT":
            break
        elif in_event and name in _EVENT_FIELDS and name not in event:
            event[name] = _shown(name, params, value)
    if not in_event:
        return None
    return Invitation(
        kind=_METHODS.get(method, "Event"),
        summary=event.get("SUMMARY", ""),
        start=event.get("DTSTART", ""),
        end=event.get("DTEND", ""),
        location=event.get("LOCATION", ""),
        organizer=event.get("ORGANIZER", ""),
    )


_EVENT_FIELDS = frozenset({"SUMMARY", "DTSTART", "DTEND", "LOCATION", "ORGANIZER"})


def _unfolded(text: str) -> list[str]:
    """The content lines: a line that starts with a space or a tab continues the one before
    (RFC 5545 section 3.1)."""
    lines: list[list[str]] = []  # each line's pieces, joined once at the end
    for raw in text.replace("\r\n", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1].append(raw[1:])
        else:
            lines.append([raw])
    return ["".join(pieces) for pieces in lines]


# A name or a parameter: anything up to a ";" or ":" that is not inside double quotes.
_PIECE = re.compile(r'(?:[^;:"]|"[^"]*")*')


def _content_line(line: str) -> tuple[str, dict[str, str], str]:
    """(NAME, {PARAM: value}, value) of ``NAME;PARAM=x;PARAM="y:z":value``, in one pass."""
    pieces = []
    position = 0
    while True:
        piece = _PIECE.match(line, position)
        assert piece is not None  # the pattern matches the empty string
        pieces.append(piece.group())
        position = piece.end()
        if position >= len(line) or line[position] == ":":
            break
        position += 1  # a ";", or an unclosed quote, which is skipped
    value = line[position + 1 :]
    name, *params = pieces
    parsed = {}
    for param in params:
        key, _, param_value = param.partition("=")
        parsed[key.strip().upper()] = param_value.strip().strip('"')
    return name.strip().upper(), parsed, value


def _shown(name: str, params: dict[str, str], value: str) -> str:
    """A field's value as a person reads it: text unescaped, a time in ISO form with its time
    zone, the organizer as "Name <address>"."""
    if name in ("DTSTART", "DTEND"):
        return _time(value.strip(), params)
    if name == "ORGANIZER":
        address = re.sub(r"(?i)^mailto:", "", value.strip())
        common_name = params.get("CN", "")
        return f"{common_name} <{address}>" if common_name else address
    return _unescaped(value).strip()


_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})?(Z)?)?")


def _time(value: str, params: dict[str, str]) -> str:
    """``20261207T100000`` with TZID=Europe/Berlin -> ``2026-12-07 10:00 (Europe/Berlin)``;
    ``...Z`` -> ``(UTC)``; a date alone -> ``2026-12-07``; anything else as written."""
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return value
    year, month, day, hour, minute, _, utc = match.groups()
    date = f"{year}-{month}-{day}"
    if hour is None:
        return date
    zone = "UTC" if utc else params.get("TZID", "")
    return f"{date} {hour}:{minute}" + (f" ({zone})" if zone else "")


_ESCAPE = re.compile(r"\\([\\;,nN])")


def _unescaped(value: str) -> str:
    """RFC 5545 TEXT: backslash escapes of backslash, semicolon, comma and newline."""
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


__all__ = ["MAX_INVITATION_CHARS", "Invitation", "read_invitation"]
