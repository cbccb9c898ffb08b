"""SMTP submission: the only module that imports smtplib.

:class:`SmtpSubmitter` implements the outbox's
:class:`~smime_companion.outbox.protocols.Submitter`: one connection per message, TLS verified
(implicit TLS or STARTTLS; plain only for loopback tests), AUTH PLAIN or LOGIN with a password,
or XOAUTH2 with a fresh token.

Failures are sorted by what the outbox may do next (see ``outbox.protocols``): a 4xx reply, or a
failure before the message was sent, is :class:`SubmissionDeferred`; a 5xx reply is
:class:`SubmissionRefused` quoting it; a connection lost after the whole message went out (the
server may have queued it) is :class:`SubmissionUncertain`. Recipients are all-or-nothing: when
one is refused the transaction is reset and nothing is sent, so a retry never duplicates mail to
the others.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smime_companion.errors import (
    SubmissionDeferred,
    SubmissionRefused,
    SubmissionUncertain,
)
from smime_companion.session import reason, text_of, tls_context, tls_hint

log = logging.getLogger(__name__)

_LINE_END = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True)
class SmtpSpec:
    """Where and how to submit. ``tls`` is ``implicit``, ``starttls`` or ``plain`` (loopback
    tests only); ``auth`` is ``password`` or ``xoauth2``; ``secret`` returns the password or a
    fresh token and is called on every connection (tokens expire), never logged. ``username``
    None means no AUTH."""

    host: str
    port: int
    username: str | None
    secret: Callable[[], str] = field(repr=False)
    tls: str = "implicit"
    auth: str = "password"
    ca_file: Path | None = None
    timeout: float = 60.0

    @property
    def label(self) -> str:
        return f"SMTP {self.host}:{self.port}"


class SmtpSubmitter:
    """Submits messages over SMTP; see the module docstring."""

    def __init__(self, spec: SmtpSpec) -> None:
        self.spec = spec

    def submit(self, message: bytes, sender: str, recipients: Sequence[str]) -> None:
        """Submit ``message`` from ``sender`` to every address of ``recipients``.

        Returns when the server accepted the message for all of them. Raises
        :class:`SubmissionDeferred` (4xx, or nothing sent), :class:`SubmissionRefused` (5xx,
        quoting the reply) or :class:`SubmissionUncertain` (connection lost after the message).
        """
        if not recipients:
            raise SubmissionRefused("no envelope recipients")
        smtp = self._connect()
        try:
            self._login(smtp)
            self._transaction(smtp, message, sender, recipients)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def check(self) -> str:
        """Connect, set up TLS and log in as :meth:`submit` would, and leave without sending
        anything (for ``doctor``); returns what was checked, e.g. ``STARTTLS, AUTH PLAIN as
        alice``. Raises the same exceptions as :meth:`submit`, whose text says what failed."""
        smtp = self._connect()
        try:
            self._login(smtp)
            offered = (smtp.esmtp_features.get("auth") or "").upper().split()
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        tls = {"implicit": "TLS", "starttls": "STARTTLS", "plain": "NO TLS"}[self.spec.tls]
        if self.spec.username is None:
            return f"{tls}, no login"
        if self.spec.auth == "xoauth2":
            mechanism = "XOAUTH2"
        else:
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), "?")
        return f"{tls}, AUTH {mechanism} as {self.spec.username}"

    # -- connection ------------------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        spec = self.spec
        try:
            if spec.tls == "implicit":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    spec.host,
                    spec.port,
                    timeout=spec.timeout,
                    context=tls_context(spec.ca_file, SubmissionDeferred, "the SMTP ca_file"),
                )
            else:
                smtp = smtplib.SMTP(spec.host, spec.port, timeout=spec.timeout)
            try:
                self._checked(smtp.ehlo(), "EHLO")
                if spec.tls == "starttls":
                    if not smtp.has_extn("starttls"):
                        raise SubmissionDeferred(
                            f"{spec.label}: the server does not offer STARTTLS"
                        )
                    self._checked(
                        smtp.starttls(
                            context=tls_context(
                                spec.ca_file, SubmissionDeferred, "the SMTP ca_file"
                            )
                        ),
                        "STARTTLS",
                    )
                    self._checked(smtp.ehlo(), "EHLO")
            except BaseException:
                smtp.close()
                raise
        except ssl.SSLCertVerificationError as exc:
            raise SubmissionDeferred(
                f"{spec.label}: TLS certificate not trusted ({exc.verify_message}); "
                "set the account's ca_file to the server's CA if it is yours"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            if isinstance(exc, smtplib.SMTPResponseException):
                raise self._reply_error(exc.smtp_code, exc.smtp_error, "connect") from None
            hint = tls_hint(
                exc, spec.tls, 'set smtp_tls = "starttls", usually with smtp_port = 587'
            )
            raise SubmissionDeferred(f"{spec.label}: cannot connect: {reason(exc)}{hint}") from None
        return smtp

    def _login(self, smtp: smtplib.SMTP) -> None:
        spec = self.spec
        if spec.username is None:
            return
        offered = (smtp.esmtp_features.get("auth") or "").upper().split()
        try:
            if spec.auth == "xoauth2":
                if "XOAUTH2" not in offered:
                    raise SubmissionDeferred(f"{spec.label}: the server does not offer XOAUTH2")
                token = spec.secret()
                raw = f"user={spec.username}\x01auth=Bearer {token}\x01\x01"

                def xoauth2(challenge: bytes | None = None) -> str:
                    # On failure the server sends a 334 with a JSON error; the client answers
                    # with an empty line to get the final 535 (RFC 7628-style exchange).
                    return raw if challenge is None else ""

                self._checked(smtp.auth("XOAUTH2", xoauth2), "AUTH XOAUTH2")
                return
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
            if mechanism is None:
                raise SubmissionDeferred(
                    f"{spec.label}: the server offers no AUTH PLAIN or LOGIN "
                    f"(offered: {' '.join(offered) or 'none'})"
                )
            smtp.user, smtp.password = spec.username, spec.secret()
            method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
            self._checked(smtp.auth(mechanism, method), f"AUTH {mechanism}")
        except smtplib.SMTPAuthenticationError as exc:
            # A refused login is a configuration problem, not the message's: try again later
            # (after the user fixes it) rather than hold the draft.
            raise SubmissionDeferred(
                f"{spec.label}: login refused for {spec.username}: "
                f"{exc.smtp_code} {_one_line(exc.smtp_error)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise self._reply_error(exc.smtp_code, exc.smtp_error, "AUTH") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SubmissionDeferred(f"{spec.label}: login failed: {reason(exc)}") from None
        finally:
            smtp.password = ""

    # -- the mail transaction --------------------------------------------------------------------

    def _transaction(
        self, smtp: smtplib.SMTP, message: bytes, sender: str, recipients: Sequence[str]
    ) -> None:
        body_sent = False
        try:
            self._expect(smtp.mail(sender), "MAIL FROM", smtp)
            for address in recipients:
                self._expect(smtp.rcpt(address), f"RCPT TO:<{address}>", smtp)
            # DATA by hand rather than smtplib's data(): we must know whether the final dot went
            # out before the connection broke.
            smtp.putcmd("data")
            self._expect(smtp.getreply(), "DATA", smtp, wanted=354)
            body_sent = True
            smtp.send(_dot_stuffed(message))
            code, reply = smtp.getreply()
        except (SubmissionDeferred, SubmissionRefused):
            raise
        except (OSError, smtplib.SMTPException) as exc:
            if body_sent:
                raise SubmissionUncertain(
                    f"{self.spec.label}: connection lost after the message was sent, before "
                    f"the server confirmed it: {reason(exc)}"
                ) from None
            raise SubmissionDeferred(
                f"{self.spec.label}: connection lost before the message was sent: {reason(exc)}"
            ) from None
        if code == -1:
            # smtplib reports a closed connection while reading the reply as code -1.
            raise SubmissionUncertain(
                f"{self.spec.label}: connection closed after the message was sent, before the "
                "server confirmed it"
            )
        if code != 250:
            raise self._reply_error(code, reply, "end of DATA")

    def _expect(
        self,
        response: tuple[int, bytes],
        step: str,
        smtp: smtplib.SMTP,
        wanted: int = 250,
    ) -> None:
        code, reply = response
        if code in (wanted, 251) or (wanted == 250 and code == 252):
            return
        try:
            smtp.rset()  # nothing of this transaction may be delivered
        except (smtplib.SMTPException, OSError):
            pass
        raise self._reply_error(code, reply, step)

    def _checked(self, response: tuple[int, bytes], step: str) -> None:
        code, reply = response
        if not 200 <= code < 400:
            raise self._reply_error(code, reply, step)

    def _reply_error(
        self, code: int, reply: bytes | str, step: str
    ) -> SubmissionDeferred | SubmissionRefused:
        text = f"{self.spec.label}: {step}: {code} {_one_line(reply)}"
        if 500 <= code < 600:
            return SubmissionRefused(text)
        return SubmissionDeferred(text)


def _dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, the final ``.`` line added."""
    data = _LINE_END.sub(b"\r\n", message)
    data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _one_line(reply: bytes | str) -> str:
    """A server's reply as one line of text."""
    return " ".join(text_of(reply).split())
