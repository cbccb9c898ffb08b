"""Meeting invitations (iCalendar, RFC 5545) read for the reader's card: what, when, where, who.
The examples follow what Exchange and Google Calendar write."""

from __future__ import annotations

import pytest

from smime_companion.core.invitation import MAX_INVITATION_CHARS, Invitation, read_invitation

EXCHANGE = (
    "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nPRODID:Microsoft Exchange Server 2010\r\n"
    "VERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\n"
    "DTSTART:16010101T030000\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\n"
    'ORGANIZER;CN="Müller, Jörg":mailto:jm@example.de\r\n'
    "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=Bob:mailto:bob@example\r\n"
    " .org\r\nDESCRIPTION;LANGUAGE=de-DE:Bitte um Teilnahme\\, danke.\\n\r\n"
    "SUMMARY;LANGUAGE=de-DE:Quartalszahlen\\, Entwurf\r\n"
    "DTSTART;TZID=W. Europe Standard Time:20261207T100000\r\n"
    "DTEND;TZID=W. Europe Standard Time:20261207T110000\r\n"
    "LOCATION;LANGUAGE=de-DE:Raum 4.12 / Teams\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
GOOGLE = (
    "BEGIN:VCALENDAR\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\nVERSION:2.0\n"
    "METHOD:CANCEL\nBEGIN:VEVENT\nDTSTART:20261208T150000Z\nDTEND:20261208T153000Z\n"
    'ORGANIZER;CN=alice@example.org:mailto:alice@example.org\nSUMMARY:Stand-up; room "B:2"\n'
    "END:VEVENT\nEND:VCALENDAR\n"
)


def test_an_exchange_invitation_says_what_when_where_and_who() -> None:
    assert read_invitation(EXCHANGE) == Invitation(
        kind="Invitation",
        summary="Quartalszahlen, Entwurf",
        start="2026-12-07 10:00 (W. Europe Standard Time)",
        end="2026-12-07 11:00 (W. Europe Standard Time)",
        location="Raum 4.12 / Teams",
        organizer="Müller, Jörg <jm@example.de>",
    )


def test_a_google_cancellation_in_utc_with_bare_line_ends() -> None:
    invitation = read_invitation(GOOGLE)
    assert invitation is not None
    assert (invitation.kind, invitation.start, invitation.end) == (
        "Cancelled", "2026-12-08 15:00 (UTC)", "2026-12-08 15:30 (UTC)",
    )  # fmt: skip
    assert invitation.summary == 'Stand-up; room "B:2"'
    assert invitation.organizer == "alice@example.org <alice@example.org>"


def test_an_all_day_event_and_an_unreadable_time_are_shown_as_written() -> None:
    text = "BEGIN:VEVENT\nDTSTART;VALUE=DATE:20261224\nDTEND:tomorrow-ish\nEND:VEVENT\n"
    invitation = read_invitation(text)
    assert invitation is not None
    assert (invitation.kind, invitation.start, invitation.end) == (
        "Event",
        "2026-12-24",
        "tomorrow-ish",
    )


@pytest.mark.parametrize(
    "text",
    ["", "BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n", "BEGIN:VTODO\nSUMMARY:x\nEND:VTODO\n"],
)
def test_a_calendar_without_an_event_is_no_invitation(text: str) -> None:
    assert read_invitation(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "BEGIN:VEVENT\n" + ";" * 200_000,
        "BEGIN:VEVENT\n" + '"' * 200_000,
        "BEGIN:VEVENT\nSUMMARY:x\n" + " y\n" * 60_000,
        "BEGIN:VEVENT\n" + "SUMMARY;" + "X=" * 100_000 + ":x\n",
    ],
    ids=["semicolons", "quotes", "folds", "parameters"],
)
def test_hostile_calendars_are_read_in_one_pass(text: str) -> None:
    # Linear: each shape read once (a quadratic split would take minutes at this size).
    invitation = read_invitation(text)
    assert invitation is not None


def test_a_calendar_export_is_too_long_for_a_card() -> None:
    text = "BEGIN:VEVENT\nSUMMARY:x\nEND:VEVENT\n" + "X" * MAX_INVITATION_CHARS
    assert read_invitation(text) is None
