"""The shape of what ``seal`` writes: transport-safe MIME, header protection (RFC 9788), the
multipart/signed framing and the signed attributes (RFC 8551)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import hashlib
import re

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_companion.core.seal import SealOptions
from smime_companion.errors import SealError
from smime_companion.testing.pki import TestPki
from tests.peers import extract_cms
from tests.test_seal_support import (
    DRAFTS,
    certificate,
    decode_words,
    decoded_header,
    headers,
    leaf_payloads,
    recipient,
    seal_draft,
    text_draft,
)
from tests.tools import openssl_cms


@pytest.fixture(scope="module")
def at(pki_now: dt.datetime) -> dt.datetime:
    """The sealing time: ``pki_now`` (the PKI is valid then), to the second, as a
    Date field and signingTime carry it."""
    return pki_now.replace(microsecond=0)


def _lines(message: bytes) -> list[bytes]:
    assert b"\n" not in message.replace(b"\r\n", b""), "a bare LF"
    assert b"\r" not in message.replace(b"\r\n", b""), "a bare CR"
    return message.split(b"\r\n")


def _long_line_draft() -> bytes:
    body = "x" * 1500 + "\r\n" + "plain line\r\n"
    return text_draft(body=body).replace(b"Content-Transfer-Encoding: 8bit", b"X-Note: long")


@pytest.mark.parametrize("shape", [*sorted(DRAFTS), "long-line"])
def test_signed_output_is_7bit_crlf_with_short_lines_and_no_trailing_whitespace(
    pki: TestPki, shape: str
) -> None:
    draft = _long_line_draft() if shape == "long-line" else DRAFTS[shape]()
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False)).main.message
    assert message.isascii()
    for line in _lines(message):
        assert len(line) <= 998
        assert not line.endswith((b" ", b"\t")), line
        assert not line.startswith(b"From "), line
    # What a reader decodes is still the draft's content, octet for octet.
    assert leaf_payloads(message) == leaf_payloads(draft)


def _relay(message: bytes) -> bytes:
    """What careless relays do: LF line ends, trailing whitespace stripped, then CRLF again."""
    lines = [line.rstrip(b" \t") for line in message.replace(b"\r\n", b"\n").split(b"\n")]
    return b"\r\n".join(lines)


@pytest.mark.parametrize("shape", sorted(DRAFTS))
def test_the_signature_survives_a_relay_that_rewrites_whitespace_and_line_ends(
    pki: TestPki, shape: str
) -> None:
    message = seal_draft(pki, DRAFTS[shape](), options=SealOptions(encrypt=False)).main.message
    relayed = _relay(message)
    assert relayed == message  # nothing a relay may touch is there to touch
    openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], relayed)


def test_8bit_text_becomes_quoted_printable_and_binary_becomes_base64(pki: TestPki) -> None:
    message = seal_draft(
        pki, DRAFTS["binary-attachment"](), options=SealOptions(encrypt=False)
    ).main.message
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    inner = msg.get_payload()[0]
    text, attachment = inner.get_payload()
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert attachment["Content-Transfer-Encoding"] == "base64"


# --- header protection (RFC 9788) -------------------------------------------------------------


def _decrypted_and_verified(pki: TestPki, message: bytes, user: str = "bob") -> bytes:
    inner = openssl_cms(["-decrypt", "-recip", pki.cert(user), "-inkey", pki.key(user)], message)
    return openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], inner)


def test_encrypted_message_hides_subject_and_keywords_outside_and_carries_them_inside(
    pki: TestPki, at: dt.datetime
) -> None:
    result = seal_draft(pki, text_draft(), recipients=[recipient(pki, "bob")], at=at)
    outer = result.main.message
    assert decoded_header(outer, "Subject") == "[...]"
    assert decoded_header(outer, "Keywords") is None
    assert decoded_header(outer, "From") == "alice@example.org"
    payload = _decrypted_and_verified(pki, outer)
    assert decoded_header(payload, "Subject") == "Quarterly numbers — confidential"
    assert decoded_header(payload, "Keywords") == "budget, secret"
    assert decoded_header(payload, "Message-ID") == "<draft-1@example.org>"
    msg = email.message_from_bytes(payload, policy=email.policy.compat32)
    assert msg.get_param("hp") == "cipher"
    # HP-Outer records exactly the non-structural fields shown outside.
    hp_outer = [decode_words(str(v)) for v in msg.get_all("HP-Outer", [])]
    assert "Subject: [...]" in hp_outer
    assert "From: alice@example.org" in hp_outer
    assert not any(v.startswith("Keywords:") for v in hp_outer)


def _main_parts(payload: bytes) -> dict[str, email.message.Message]:
    msg = email.message_from_bytes(payload, policy=email.policy.compat32)
    return {
        part.get_content_type(): part
        for part in msg.walk()
        if not part.is_multipart() and part.get_content_type() != "application/pkcs7-signature"
    }


def test_an_encrypted_message_shows_its_subject_to_readers_without_header_protection(
    pki: TestPki,
) -> None:
    # Outlook, Apple Mail and Thunderbird (for S/MIME) show the outer "[...]": RFC 9788's
    # legacy display puts the Subject at the top of every main body part, marked for readers
    # that show the protected Subject instead. What openssl decrypts is what they show.
    for shape in ("utf8-text", "html-alternative", "binary-attachment"):
        sealed = seal_draft(pki, DRAFTS[shape](), recipients=[recipient(pki, "bob")])
        parts = _main_parts(_decrypted_and_verified(pki, sealed.main.message))
        plain = parts["text/plain"]
        assert plain.get_param("hp-legacy-display") == "1"
        text = plain.get_payload(decode=True).decode(plain.get_content_charset())
        assert text.startswith("Subject: Quarterly numbers — confidential\r\n\r\nGrüße aus Köln")
        if shape == "html-alternative":
            html = parts["text/html"].get_payload(decode=True).decode("utf-8")
            assert html.startswith(
                '<html><body><div class="header-protection-legacy-display">'
                "<pre>Subject: Quarterly numbers &#8212; confidential</pre></div><p>Grüße"
            )
        if shape == "binary-attachment":
            assert parts["application/octet-stream"].get_param("hp-legacy-display") is None


def test_no_legacy_display_where_nothing_is_obscured(pki: TestPki) -> None:
    for options in (SealOptions(encrypt=False), SealOptions(header_protection=False)):
        rcpts = [recipient(pki, "bob")] if options.encrypt else []
        sealed = seal_draft(pki, text_draft(), recipients=rcpts, options=options)
        message = sealed.main.message
        if options.encrypt:
            inner = _decrypted_and_verified(pki, message)
        else:
            inner = openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], message)
        assert b"hp-legacy-display" not in inner
        assert (
            _main_parts(inner)["text/plain"].get_payload(decode=True).startswith("Grüße".encode())
        )


def test_a_subject_the_text_charset_cannot_write_turns_the_text_into_utf8(pki: TestPki) -> None:
    draft = (
        "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: 東京 trip\r\n"
        "Content-Type: text/plain; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n"
    ).encode()
    draft = draft.replace("Grüße".encode(), "Grüße".encode("latin-1"))
    sealed = seal_draft(pki, draft, recipients=[recipient(pki, "bob")])
    plain = _main_parts(_decrypted_and_verified(pki, sealed.main.message))["text/plain"]
    assert plain.get_content_charset() == "utf-8"
    assert plain.get_payload(decode=True).decode("utf-8") == "Subject: 東京 trip\r\n\r\nGrüße\r\n"


def test_signed_only_message_keeps_headers_outside_and_marks_the_payload_clear(
    pki: TestPki,
) -> None:
    result = seal_draft(pki, text_draft(), options=SealOptions(encrypt=False))
    outer = result.main.message
    assert decoded_header(outer, "Subject") == "Quarterly numbers — confidential"
    signed = openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], outer)
    msg = email.message_from_bytes(signed, policy=email.policy.compat32)
    assert msg.get_param("hp") == "clear"
    assert decode_words(str(msg["Subject"])) == "Quarterly numbers — confidential"
    assert msg.get_all("HP-Outer") is None


def test_without_header_protection_the_payload_has_only_content_headers(pki: TestPki) -> None:
    options = SealOptions(header_protection=False)
    result = seal_draft(pki, text_draft(), recipients=[recipient(pki, "bob")], options=options)
    assert decoded_header(result.main.message, "Subject") == "Quarterly numbers — confidential"
    payload = _decrypted_and_verified(pki, result.main.message)
    msg = email.message_from_bytes(payload, policy=email.policy.compat32)
    assert msg.get_param("hp") is None
    assert msg["From"] is None and msg["Subject"] is None


# What Thunderbird and Apple Mail keep in a draft for themselves, as saved to IMAP Drafts.
DRAFT_ONLY = {
    "thunderbird": (
        "X-Mozilla-Status: 0000\r\nX-Mozilla-Status2: 00000000\r\n"
        "X-Mozilla-Draft-Info: internal/draft; vcard=0; receipt=0; DSN=0; uuencode=0;\r\n"
        " attachmentreminder=0; deliveryformat=1\r\nX-Identity-Key: id1\r\n"
        "X-Account-Key: account2\r\nFcc: imap://alice%40example.org@mail.example.org/Sent\r\n"
    ),
    "apple-mail": (
        "X-Uniform-Type-Identifier: com.apple.mail-draft\r\nX-Apple-Auto-Saved: 1\r\n"
        "X-Apple-Mail-Remote-Attachments: YES\r\nX-Apple-Base-Url: x-msg://3/\r\n"
        "X-Universally-Unique-Identifier: 5E0B2E0C-1A2B-4C3D-9E8F-0123456789AB\r\n"
    ),
    "mbox": "Status: RO\r\nX-Status: A\r\nX-Keywords: $Draft\r\nContent-Length: 1234\r\n",
}


@pytest.mark.parametrize("client", sorted(DRAFT_ONLY))
@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "signed"])
def test_what_a_client_keeps_in_its_draft_for_itself_is_never_sent(
    pki: TestPki, client: str, encrypt: bool
) -> None:
    # Thunderbird's Fcc names the account and the server; its client strips these before
    # sending, and so must the outbox.
    draft = text_draft().replace(b"MIME-Version:", DRAFT_ONLY[client].encode() + b"MIME-Version:")
    assert b"MIME-Version:" in draft
    rcpts = [recipient(pki, "bob")] if encrypt else []
    sealed = seal_draft(pki, draft, recipients=rcpts, options=SealOptions(encrypt=encrypt))
    message = sealed.main.message
    inner = _decrypted_and_verified(pki, message) if encrypt else message
    for name in re.findall(r"(?m)^([A-Za-z0-9-]+):", DRAFT_ONLY[client]):
        for where in (message, inner):
            assert f"\n{name}:".lower().encode() not in where.lower(), name
    assert decoded_header(inner, "Subject") == "Quarterly numbers — confidential"


def test_other_x_fields_of_a_draft_are_sent(pki: TestPki) -> None:
    draft = text_draft().replace(b"MIME-Version:", b"X-Priority: 1\r\nMIME-Version:")
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False)).main.message
    assert decoded_header(message, "X-Priority") == "1"


def test_missing_date_and_message_id_are_added_from_the_sealing_time(
    pki: TestPki, at: dt.datetime
) -> None:
    draft = re.sub(rb"(Date|Message-ID): [^\r]*\r\n", b"", text_draft())
    assert b"Date:" not in draft
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False), at=at).main.message
    assert decoded_header(message, "Date") == email.utils.format_datetime(at)
    assert decoded_header(message, "Date").endswith(" +0000")
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.org>", decoded_header(message, "Message-ID") or "")


def test_the_date_is_the_sealing_time_in_the_drafts_time_zone(
    pki: TestPki, at: dt.datetime
) -> None:
    # A draft carries the time it was saved; sent a day later, its Date would be a day from
    # the signing time, which Thunderbird calls an invalid signature (more than an hour).
    saved = (at - dt.timedelta(days=1)).astimezone(dt.timezone(dt.timedelta(hours=1)))
    draft = re.sub(
        rb"Date: [^\r]*", f"Date: {email.utils.format_datetime(saved)}".encode(), text_draft()
    )
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False), at=at).main.message
    sent = email.utils.parsedate_to_datetime(decoded_header(message, "Date") or "")
    assert sent == at and sent.utcoffset() == dt.timedelta(hours=1)
    header = message.split(b"\r\n\r\n", 1)[0]
    assert header.count(b"\r\nDate: ") + header.startswith(b"Date: ") == 1  # replaced, not added


# --- multipart/signed and the signed attributes ----------------------------------------------


@pytest.fixture(scope="module")
def signed_message(pki: TestPki, at: dt.datetime) -> bytes:
    return seal_draft(pki, text_draft(), options=SealOptions(encrypt=False), at=at).main.message


def test_multipart_signed_uses_the_rfc_8551_media_type_and_micalg(signed_message: bytes) -> None:
    msg = email.message_from_bytes(signed_message, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/signed"
    assert msg.get_param("protocol") == "application/pkcs7-signature"
    assert msg.get_param("micalg") == "sha-256"
    assert msg.get_payload()[1].get_content_type() == "application/pkcs7-signature"
    assert b"x-pkcs7" not in signed_message


def test_signed_attributes_are_complete_and_the_digest_covers_the_exact_part(
    signed_message: bytes, pki: TestPki, at: dt.datetime
) -> None:
    der, content = extract_cms(signed_message)
    assert content is not None
    signed_data = cms.ContentInfo.load(der)["content"]
    assert signed_data["encap_content_info"]["content"].native is None  # detached
    signer = signed_data["signer_infos"][0]
    assert signer["digest_algorithm"]["algorithm"].native == "sha256"
    attrs = {a["type"].dotted: a["values"][0] for a in signer["signed_attrs"]}
    by_name = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    assert by_name["content_type"].native == "data"
    assert by_name["message_digest"].native == hashlib.sha256(content).digest()
    assert by_name["signing_time"].native == at
    capabilities = [c["capability_id"].native for c in by_name["smime_capabilities"]]
    assert capabilities[:4] == ["aes256_gcm", "aes128_gcm", "aes256_cbc", "aes128_cbc"]
    alice = certificate(pki, "alice")
    preference = by_name["encrypt_key_pref"]
    assert preference.name == "issuer_and_serial_number"
    assert preference.chosen["serial_number"].native == alice.serial_number
    microsoft = cms.IssuerAndSerialNumber.load(attrs["1.3.6.1.4.1.311.16.4"].dump())
    assert microsoft["serial_number"].native == alice.serial_number
    assert microsoft["issuer"].dump() == preference.chosen["issuer"].dump()


def test_the_signature_carries_the_signer_certificate_and_its_intermediate(
    signed_message: bytes, pki: TestPki
) -> None:
    der, _ = extract_cms(signed_message)
    signed_data = cms.ContentInfo.load(der)["content"]
    wanted = {
        x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(serialization.Encoding.DER)
        for path in (pki.cert("alice"), pki.intermediate)
    }
    assert {c.chosen.dump() for c in signed_data["certificates"]} == wanted


def test_a_non_ascii_subject_travels_as_encoded_words(pki: TestPki) -> None:
    draft = headers("alice@example.org", ["Bøb <bob@example.org>"]).encode() + b"\r\nhi\r\n"
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False)).main.message
    assert message.isascii()
    assert decoded_header(message, "To") == "Bøb <bob@example.org>"
    assert decoded_header(message, "Subject") == "Quarterly numbers — confidential"


def test_a_forwarded_message_attachment_is_made_7bit_inside_and_still_verifies(
    pki: TestPki,
) -> None:
    draft = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
        b"--outer\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
        b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: carol@example.org\r\nSubject: caf\xc3\xa9\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"h\xc3\xa9llo  \r\n--outer--\r\n"
    )
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False)).main.message
    assert message.isascii()
    assert b"Subject: =?utf-8?b?Y2Fmw6k=?=" in message  # the embedded message's header
    signed = openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], message)
    assert leaf_payloads(signed) == leaf_payloads(draft)


def test_a_draft_without_mime_headers_is_sealed_as_text_plain(pki: TestPki) -> None:
    draft = b"From: alice@example.org\nTo: bob@example.org\nSubject: plain\n\nno MIME \xc3\xa9\n"
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False)).main.message
    signed = openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], message)
    msg = email.message_from_bytes(signed, policy=email.policy.compat32)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_payload(decode=True) == b"no MIME \xc3\xa9\r\n"


def test_an_unfoldable_long_unstructured_header_travels_as_encoded_words(pki: TestPki) -> None:
    draft = text_draft().replace(b"Keywords:", b"X-Token: " + b"a" * 1200 + b"\r\nKeywords:")
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False)).main.message
    assert max(map(len, message.split(b"\r\n"))) <= 998
    assert decoded_header(message, "X-Token") == "a" * 1200


def test_an_unfoldable_long_structured_header_is_refused(pki: TestPki) -> None:
    draft = text_draft().replace(b"<draft-1@example.org>", b"<" + b"a" * 1200 + b"@example.org>")
    with pytest.raises(SealError, match="header Message-ID has a line longer than 998 octets"):
        seal_draft(pki, draft, options=SealOptions(encrypt=False))


def test_a_draft_with_cr_only_line_ends_is_read_line_by_line(pki: TestPki) -> None:
    draft = b"From: alice@example.org\rTo: bob@example.org\rSubject: old Mac\r\rbody\r"
    message = seal_draft(pki, draft, options=SealOptions(encrypt=False)).main.message
    assert decoded_header(message, "Subject") == "old Mac"
    signed = openssl_cms(["-verify", "-purpose", "smimesign", "-CAfile", pki.root], message)
    assert leaf_payloads(signed) == [("text/plain", b"body\r\n")]


# Part headers the email package cannot decode a part's text with: get_payload() raised
# ValueError (a NUL in the label) or UnicodeError (idna) out of seal, and an 8-bit
# Content-Disposition came back as a Header object. Found by a one-off mutation fuzz of drafts.
ODD_PART_HEADERS = {
    "nul-in-charset": b'Content-Type: text/plain; charset="utf\x00-8"',
    "idna-charset": b"Content-Type: text/plain; charset=idna",
    "8bit-disposition": b"Content-Type: text/plain; charset=utf-8\r\n"
    b'Content-Disposition: inline; filename="Gr\xc3\xbc\xc3\x9fe.txt"',
}


@pytest.mark.parametrize("odd", sorted(ODD_PART_HEADERS))
def test_a_part_header_the_email_package_cannot_decode_with_is_sealed_or_refused_in_a_line(
    pki: TestPki, odd: str
) -> None:
    draft = (
        headers("alice@example.org", ["bob@example.org"]).encode()
        + b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
        + ODD_PART_HEADERS[odd]
        + b"\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n--m--\r\n"
    )
    sealed = seal_draft(pki, draft, recipients=[recipient(pki, "bob")])
    text = _main_parts(_decrypted_and_verified(pki, sealed.main.message))["text/plain"]
    assert "Grüße".encode() in text.get_payload(decode=True)
    if odd == "nul-in-charset":  # signed only, the label is written as it is: refused
        with pytest.raises(SealError, match="Content-Type holds a line break or NUL"):
            seal_draft(pki, draft, options=SealOptions(encrypt=False))
    else:
        seal_draft(pki, draft, options=SealOptions(encrypt=False))
