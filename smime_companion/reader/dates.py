"""Dates as the reader shows them: in this machine's time zone (the reader's user sits at it)
and in words, as webmail shows them. The raw values stay one hover away where a page shows one.
"""

from __future__ import annotations

from datetime import datetime

from smime_companion.core.text import header_date

__all__ = ["in_full", "in_list", "shown_header_date", "shown_iso_time"]


def in_list(moment: datetime, now: datetime) -> str:
    """A list row's date: the time for today's mail, day and month for this year's, the whole
    date before."""
    local, today = moment.astimezone(), now.astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M")
    if local.year == today.year:
        return f"{local.day} {local.strftime('%b')}"
    return local.strftime("%Y-%m-%d")


def in_full(moment: datetime) -> str:
    """A date and time in full: "7 Dec 2026, 02:20 CET"."""
    local = moment.astimezone()
    return f"{local.day} {local.strftime('%b %Y, %H:%M %Z')}"


def shown_header_date(value: str) -> str:
    """A Date header field in full (:func:`in_full`); as it came when it is no date."""
    moment = header_date(value)
    return in_full(moment) if moment is not None else value


def shown_iso_time(iso: str) -> str:
    """An ISO 8601 time from a report in full (:func:`in_full`); as it came when it is not
    one."""
    try:
        return in_full(datetime.fromisoformat(iso))
    except ValueError:
        return iso
