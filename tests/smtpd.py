"""The tests' SMTP submission server: :class:`smime_companion.testing.smtp_sink.SmtpSink` (the demo
runs it too), re-exported under the names the tests use. It logs in ``USERNAME``/``PASSWORD``
(or ``TOKEN`` over XOAUTH2) and records what it accepts; its ``answer_next`` injects failures."""

from __future__ import annotations

from smime_companion.testing.smtp_sink import (
    PASSWORD,
    TOKEN,
    USERNAME,
    Received,
    running_smtpd,
)
from smime_companion.testing.smtp_sink import SmtpSink as SmtpServer

__all__ = ["PASSWORD", "TOKEN", "USERNAME", "Received", "SmtpServer", "running_smtpd"]
