"""SMTP submission against a real aiosmtpd server on loopback: TLS verified, AUTH, and each kind of
failure sorted into deferred (4xx, nothing sent), refused (5xx) and uncertain (lost after DATA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_companion.errors import (
    SubmissionDeferred,
    SubmissionRefused,
    SubmissionUncertain,
)
from smime_companion.smtp import SmtpSpec, SmtpSubmitter
from tests.smtpd import PASSWORD, TOKEN, USERNAME, SmtpServer, running_smtpd
from tests.tools import mime_message


@pytest.fixture()
def smtpd() -> Iterator[SmtpServer]:
    yield from running_smtpd("starttls")


@pytest.fixture()
def smtpd_implicit() -> Iterator[SmtpServer]:
    yield from running_smtpd("implicit")


def _spec(server: SmtpServer, **overrides: object) -> SmtpSpec:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": USERNAME,
        "secret": lambda: PASSWORD,
        "tls": server.tls,
        "ca_file": server.cert,
        "timeout": 10.0,
    }
    values.update(overrides)
    return SmtpSpec(**values)  # type: ignore[arg-type]


MESSAGE = mime_message(body="Hello Bob,\r\n.a line starting with a dot\r\n.\r\nend\r\n")


def test_starttls_with_auth_delivers_the_exact_bytes_to_every_envelope_recipient(
    smtpd: SmtpServer,
) -> None:
    SmtpSubmitter(_spec(smtpd)).submit(
        MESSAGE, "alice@example.org", ["bob@example.org", "carol@example.org"]
    )
    [got] = smtpd.received
    assert got.sender == "alice@example.org"
    assert got.recipients == ("bob@example.org", "carol@example.org")
    # Dot-stuffing is undone by the server: the lines starting with a dot arrive unchanged.
    assert got.data == MESSAGE
    assert smtpd.handler.logins == [f"{USERNAME}:PLAIN"]


def test_implicit_tls_with_auth_delivers(smtpd_implicit: SmtpServer) -> None:
    SmtpSubmitter(_spec(smtpd_implicit)).submit(MESSAGE, "alice@example.org", ["bob@example.org"])
    assert [r.data for r in smtpd_implicit.received] == [MESSAGE]


def test_xoauth2_login_delivers(smtpd: SmtpServer) -> None:
    spec = _spec(smtpd, auth="xoauth2", secret=lambda: TOKEN)
    SmtpSubmitter(spec).submit(MESSAGE, "alice@example.org", ["bob@example.org"])
    assert len(smtpd.received) == 1
    assert smtpd.handler.logins == [f"{USERNAME}:XOAUTH2"]


def test_a_server_certificate_not_trusted_is_refused_before_anything_is_sent(
    smtpd: SmtpServer, tmp_path: Path
) -> None:
    with pytest.raises(SubmissionDeferred, match="TLS certificate not trusted"):
        SmtpSubmitter(_spec(smtpd, ca_file=None)).submit(
            MESSAGE, "alice@example.org", ["bob@example.org"]
        )
    assert smtpd.received == []


def test_a_wrong_password_is_a_deferred_login_failure_without_the_password(
    smtpd: SmtpServer,
) -> None:
    with pytest.raises(SubmissionDeferred, match="login refused for alice") as err:
        SmtpSubmitter(_spec(smtpd, secret=lambda: "wrong-pw")).submit(
            MESSAGE, "alice@example.org", ["bob@example.org"]
        )
    assert "wrong-pw" not in str(err.value)
    assert smtpd.received == []


@pytest.mark.parametrize("reply", ["421 4.3.2 Service shutting down", "451 4.3.0 Try later"])
def test_a_4xx_reply_is_deferred_and_quoted(smtpd: SmtpServer, reply: str) -> None:
    smtpd.answer_next(reply)
    with pytest.raises(SubmissionDeferred) as err:
        SmtpSubmitter(_spec(smtpd)).submit(MESSAGE, "alice@example.org", ["bob@example.org"])
    assert reply in str(err.value)
    assert smtpd.received == []


def test_a_5xx_reply_is_refused_and_quoted(smtpd: SmtpServer) -> None:
    smtpd.answer_next("554 5.7.1 Message rejected as spam")
    with pytest.raises(SubmissionRefused, match="554 5.7.1 Message rejected as spam"):
        SmtpSubmitter(_spec(smtpd)).submit(MESSAGE, "alice@example.org", ["bob@example.org"])


def test_a_connection_lost_after_data_is_uncertain(smtpd: SmtpServer) -> None:
    smtpd.answer_next("drop")
    with pytest.raises(SubmissionUncertain, match="after the message was sent"):
        SmtpSubmitter(_spec(smtpd)).submit(MESSAGE, "alice@example.org", ["bob@example.org"])
    # The server did take it: that is why the outbox must not resend on its own.
    assert len(smtpd.received) == 1


def test_nobody_listening_is_deferred() -> None:
    from tests.dovecot import free_port

    spec = SmtpSpec("127.0.0.1", free_port(), USERNAME, lambda: PASSWORD, tls="starttls")
    with pytest.raises(SubmissionDeferred, match="cannot connect"):
        SmtpSubmitter(spec).submit(MESSAGE, "alice@example.org", ["bob@example.org"])
