"""Internationalised domains in the signer-address rule (RFC 8550 section 3, RFC 9598).

A certificate names an internationalised domain with A-labels (``xn--bcher-kva``: rfc822Name is
ASCII) or, in a SmtpUTF8Mailbox, with the Unicode labels; a From field may carry either (RFC
6532 allows UTF-8 there). The same address in the other form is the same signer; a different
domain that IDNA 2003 would map onto it (``strasse`` for ``straße``) is not. A name written to
look like another (Latin mixed with Cyrillic, Cyrillic letters that read as Latin) signs validly
and is named: ``look-alike-address``.

Certificates are made by ``openssl x509 -req`` under the test intermediate, messages signed by
``openssl cms -sign``, and judged an hour after the certificate's notBefore.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smime_companion.core.lookalike import is_lookalike
from smime_companion.core.mime import comparable_address
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.testing.pki import TestPki
from tests.conftest import load_cert
from tests.tools import openssl_cms, run


def _signer(pki: TestPki, directory: Path, san: str) -> tuple[Path, Path]:
    key, csr, cert = directory / "k.pem", directory / "c.csr", directory / "c.pem"
    ext = directory / "ext.cnf"
    ext.write_text(
        "subjectAltName=@alt\nextendedKeyUsage=emailProtection\n"
        "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
        f"[alt]\n{san}\n",
        encoding="utf-8",
    )
    run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-subj", "/CN=IDN signer", "-out", csr])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", csr, "-CA", pki.intermediate, "-CAkey",
         pki.directory / "intermediate.key.pem", "-CAcreateserial", "-days", "30",
         "-extfile", ext, "-out", cert])  # fmt: skip
    return cert, key


def _opened(pki: TestPki, signer: tuple[Path, Path], sender: str) -> OpenResult:
    cert, key = signer
    entity = (
        f"From: {sender}\r\nTo: bob@example.org\r\nSubject: IDN\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n"
    ).encode()
    signed = openssl_cms(["-sign", "-signer", cert, "-inkey", key, "-certfile",
                          pki.intermediate, "-crlfeol"], entity)  # fmt: skip
    # openssl writes its own MIME headers: put the From (raw UTF-8, RFC 6532) above them.
    message = f"From: {sender}\r\nTo: bob@example.org\r\n".encode() + signed
    at = load_cert(cert).not_valid_before_utc + dt.timedelta(hours=1)
    return open_message(message, anchors=[load_cert(pki.root)], at=at)


@pytest.mark.parametrize(
    ("san", "sender", "expected"),
    [
        # rfc822Name with A-labels, From with U-labels (and in NFD, as some keyboards write)
        ("email.0=anna@xn--bcher-kva.example", "Anna <anna@bücher.example>", "valid"),
        ("email.0=anna@xn--bcher-kva.example", "anna@bu\u0308cher.example", "valid"),
        ("email.0=anna@xn--bcher-kva.example", "Anna@XN--BCHER-KVA.example", "valid"),
        # SmtpUTF8Mailbox with U-labels, From with A-labels
        (
            "otherName.0=1.3.6.1.5.5.7.8.9;FORMAT:UTF8,UTF8:jörg@bücher.example",
            "jörg@xn--bcher-kva.example",
            "valid",
        ),
        # straße and strasse are two domains (IDNA 2003 would have mapped one onto the other)
        ("email.0=info@xn--strae-oqa.example", "info@strasse.example", "email-mismatch"),
        ("email.0=info@strasse.example", "info@straße.example", "email-mismatch"),
        ("email.0=anna@xn--bcher-kva.example", "anna@bucher.example", "email-mismatch"),
    ],
    ids=[
        "a-label-cert-u-label-from",
        "nfd-from",
        "upper-case",
        "smtputf8-mailbox",
        "sz-is-not-ss",
        "ss-is-not-sz",
        "accent-dropped",
    ],  # fmt: skip
)
def test_an_internationalised_domain_is_the_same_address_in_either_form(
    pki: TestPki, tmp_path: Path, san: str, sender: str, expected: str
) -> None:
    assert _opened(pki, _signer(pki, tmp_path, san), sender).signature == expected


def test_a_long_or_broken_a_label_is_compared_as_written() -> None:
    # Punycode decoding costs the square of its length: only label-sized text is read.
    long_label = "xn--" + "a" * 100_000
    assert comparable_address(f"x@{long_label}.example") == f"x@{long_label}.example"
    assert comparable_address("x@xn--zz-.example") == "x@zz.example"
    assert (
        comparable_address("x@xn--99999999999999999.example") == "x@xn--99999999999999999.example"
    )


@pytest.mark.parametrize(
    ("san", "sender", "lookalike"),
    [
        # A Cyrillic "а" among Latin letters: "pаypal" (xn--pypal-4ve), in either form.
        ("email.0=billing@xn--pypal-4ve.example", "billing@pаypal.example", True),
        ("email.0=billing@xn--pypal-4ve.example", "billing@xn--pypal-4ve.example", True),
        # Cyrillic letters that all read as Latin ones under .com: "аррӏе" reads "apple".
        ("email.0=id@xn--80ak6aa92e.com", "id@аррӏе.com", True),
        # Real internationalised names: German, Russian under .рф, Russian under .com.
        ("email.0=anna@xn--bcher-kva.example", "anna@bücher.example", False),
        ("email.0=ivan@xn--d1acufc.xn--p1ai", "ivan@домен.рф", False),
        ("email.0=post@xn--80a1acny.com", "post@почта.com", False),
    ],
    ids=["mixed-u-label", "mixed-a-label", "whole-script", "german", "russian-rf", "russian-com"],
)
def test_a_valid_signature_by_a_look_alike_address_is_named(
    pki: TestPki, tmp_path: Path, san: str, sender: str, lookalike: bool
) -> None:
    # The certificate is real and the signature sound: the trick is the name. Browsers show
    # such names as xn--; the verdict stays valid and names the look-alike.
    result = _opened(pki, _signer(pki, tmp_path, san), sender)
    assert result.signature == "valid"
    assert ("look-alike-address" in result.warnings) is lookalike


@pytest.mark.parametrize(
    ("address", "lookalike"),
    [
        ("alice@example.org", False),
        ("аlice@example.org", True),  # a Cyrillic "а" in the local part (SMTPUTF8)
        ("ceo@сосо.com", True),  # "coco" in Cyrillic letters under .com ...
        ("ceo@сосо.рф", False),  # ... and under Russia's own domain, where it is Russian
        ("user@ορα.com", True),  # Greek letters that read "opa"
        ("user@ελληνικά.gr", False),
        ("jörg@müller.example", False),
        ("x@xn--zz.example", False),  # no valid A-label: compared as written
        ("a@" + "xn--" * 100, False),  # no address at all
    ],
)
def test_look_alike_addresses_are_told_from_internationalised_ones(
    address: str, lookalike: bool
) -> None:
    assert is_lookalike(address) is lookalike
