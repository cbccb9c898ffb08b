"""The demo's mail (see :mod:`smime_companion.testing.demo`): six messages for Bob's INBOX, made
by ``openssl cms`` from the test PKI, and Bob's draft to Alice for the outbox.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable
from pathlib import Path

# A word that occurs only in the body of the encrypted message: finding it shows that the
# daemon decrypted the message and indexed its text.
SECRET_WORD = "marzipan"

# What step 3 says about the six messages, in delivery order.
INBOX_SUMMARY = (
    "1 signed by Alice; 2 encrypted by Carol (not signed); 3 signed by Carol, then "
    "encrypted (AES-256-GCM); 4 signed by Alice, then one amount changed; 5 plain; 6 "
    "encrypted, in Japanese and German."
)


def _headers(sender: str, to: str, subject: str, when: dt.datetime, tag: str) -> bytes:
    """A header section's fields (From, To, Subject, Date, Message-ID), without its end."""
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.format_datetime(when)}\r\nMessage-ID: <{tag}@demo.example.org>\r\n"
    ).encode()


def _entity(text: str) -> bytes:
    """``text`` as a text/plain entity in UTF-8 with CRLF line ends."""
    body = "".join(f"{line}\r\n" for line in text.splitlines())
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode()


def make_inbox(
    mail: Path, openssl: Callable[..., None], now: dt.datetime
) -> list[tuple[str, bytes]]:
    """Step 3's messages, made in the new directory ``mail`` with ``openssl`` (which runs
    ``openssl cms ARGS`` in its parent, raising when it fails): (file name, whole message)
    pairs, also written there."""
    mail.mkdir()
    alice, carol, bob = "Alice <alice@example.org>", "Carol <carol@example.org>", "bob@example.org"

    def sign(name: str, user: str, text: str) -> None:
        (mail / f"{name}.txt").write_bytes(_entity(text))
        openssl("-sign", "-in", f"mail/{name}.txt", "-signer", f"pki/{user}.cert.pem",
                     "-inkey", f"pki/{user}.key.pem", "-certfile", "pki/intermediate.pem",
                     "-crlfeol", "-out", f"mail/{name}.signed")  # fmt: skip

    def encrypt(name: str, source: str, cipher: str) -> None:
        openssl("-encrypt", "-in", f"mail/{source}", cipher, "-recip", "pki/bob.cert.pem",
                     "-crlfeol", "-out", f"mail/{name}.p7m")  # fmt: skip

    sign("1-signed", "alice", "Shall we try the new noodle bar on Friday?\n-- Alice")
    (mail / "2-encrypted.txt").write_bytes(
        _entity(f"The code of the lab door is now 4711; the password is {SECRET_WORD}.\n-- Carol")
    )
    encrypt("2-encrypted", "2-encrypted.txt", "-aes256")
    sign("3-signed-encrypted", "carol", "The budget draft: travel 1200 EUR, hardware 800 EUR.")
    encrypt("3-signed-encrypted", "3-signed-encrypted.signed", "-aes-256-gcm")
    sign("4-forged", "alice", "Please transfer 250 EUR to the usual account.\n-- Alice")
    (mail / "6-international.txt").write_bytes(
        _entity(
            "日本語のテキストです。来週、東京で会いましょう。\nTreffen an der Straße nach Köln."
        )
    )
    encrypt("6-international", "6-international.txt", "-aes256")
    signed = (mail / "4-forged.signed").read_bytes()
    (mail / "4-forged.signed").write_bytes(signed.replace(b"250 EUR", b"950 EUR"))

    def at(minutes: int) -> dt.datetime:
        return now - dt.timedelta(minutes=minutes)

    messages = [
        ("1-signed.eml", _headers(alice, bob, "Lunch on Friday", at(50), "lunch")
         + (mail / "1-signed.signed").read_bytes()),
        ("2-encrypted.eml", _headers(carol, bob, "Door code", at(40), "door")
         + (mail / "2-encrypted.p7m").read_bytes()),
        ("3-signed-encrypted.eml", _headers(carol, bob, "Budget draft", at(30), "budget")
         + (mail / "3-signed-encrypted.p7m").read_bytes()),
        ("4-forged.eml", _headers(alice, bob, "Transfer", at(20), "transfer")
         + (mail / "4-forged.signed").read_bytes()),
        ("5-plain.eml", _headers(alice, bob, "Plain note", at(10), "plain")
         + b"MIME-Version: 1.0\r\n" + _entity("No S/MIME here: the daemon leaves it alone.")),
        ("6-international.eml", _headers(carol, bob, "Reiseplan", at(5), "travel")
         + (mail / "6-international.p7m").read_bytes()),
    ]  # fmt: skip
    for name, raw in messages:
        (mail / name).write_bytes(raw)
    return messages


def make_draft(now: dt.datetime) -> bytes:
    """Bob's reply to Alice, a plain draft for the outbox to seal and send."""
    return (
        _headers(
            "Bob <bob@example.org>",
            "Alice <alice@example.org>",
            "Re: Lunch on Friday",
            now,
            "reply",
        )  # fmt: skip
        + b"MIME-Version: 1.0\r\n"
        + _entity("Friday suits me. Noodles at noon?\n-- Bob")
    )
