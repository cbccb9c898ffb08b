"""Interop with OpenSSL 3.0: every S/MIME form ``openssl cms`` writes opens with the right verdict.

Each case makes its message at test time from the test PKI with the real ``openssl cms`` (see
``tests/interop_cases.md`` for how each one is made) and checks what ``open_message`` reports:
decryption, signature, signer, layers, content cipher and that the original body comes out.

OpenSSL is given the MIME entity (Content-Type + body) as input; the outer From/To/Subject come
from its ``-from/-to/-subject`` options, as they would from a mail client.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from tests.conftest import load_cert
from tests.peers import Expect, PeerCannot, check_opened, interop_params
from tests.tools import mime_message, run

if TYPE_CHECKING:  # imported for annotations only: pytest would try to collect "TestPki"
    from smime_companion.testing.pki import TestPki

VALID = SignatureStatus.VALID
OK = Decryption.OK
WEAK_CIPHER = "weak-cipher"


def _openssl(args: Sequence[str | Path], data: bytes, command: str = "cms") -> bytes:
    """``openssl cms ARGS`` (or the legacy ``openssl smime``) on ``data``; a refusal is the
    tool's limitation (PeerCannot)."""
    try:
        return run(["openssl", command, *args], stdin=data)
    except AssertionError as exc:
        raise PeerCannot(str(exc)) from None


@dataclass(frozen=True)
class Draft:
    """What a case seals: the MIME entity and the outer headers openssl is asked to write."""

    marker: str
    sender: str
    to: str = "bob@example.org"

    @property
    def entity(self) -> bytes:
        return (
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n{self.marker}\r\nBye.\r\n"
        ).encode()

    @property
    def outer(self) -> list[str]:
        return ["-from", self.sender, "-to", self.to, "-subject", f"Interop {self.marker}"]


# --- how openssl is asked to make each layer --------------------------------------------------


def _chain_args(pki: TestPki, user: str) -> list[str | Path]:
    # Like a real client, send the signer's issuing CA along (the rogue user's own root, which
    # must not make it trusted).
    return ["-certfile", pki.rogue_root if user == "rogue" else pki.intermediate]


def sign(
    pki: TestPki,
    content: bytes,
    user: str,
    *extra: str,
    outer: Sequence[str] = (),
    detached: bool = True,
) -> bytes:
    """openssl's S/MIME signed message (multipart/signed, or pkcs7-mime when not detached)."""
    args: list[str | Path] = ["-sign", "-signer", pki.cert(user), "-inkey", pki.key(user)]
    args += _chain_args(pki, user)
    if not detached:
        args.append("-nodetach")
    return _openssl([*args, *extra, *outer], content)


def encrypt(
    pki: TestPki,
    content: bytes,
    recipients: Sequence[str],
    *extra: str,
    cipher: str = "-aes256",
    keyopts: Sequence[str] = (),
    outer: Sequence[str] = (),
) -> bytes:
    """openssl's S/MIME enveloped message for ``recipients``; ``keyopts`` apply to each."""
    args: list[str | Path] = ["-encrypt", cipher, *extra]
    for user in recipients:
        args += ["-recip", pki.cert(user)]
        for opt in keyopts:
            args += ["-keyopt", opt]
    return _openssl([*args, *outer], content)


def der_wrapped(der: bytes, smime_type: str, draft: Draft) -> bytes:
    """``-outform DER`` output carried as binary application/pkcs7-mime, as some gateways do."""
    head = (
        f"From: {draft.sender}\r\nTo: {draft.to}\r\nSubject: Interop {draft.marker}\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: binary\r\n"
        'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
    )
    return head.encode() + der


def lf_only(message: bytes) -> bytes:
    """The whole message with LF line ends (as stored by Unix mailboxes and some clients)."""
    return message.replace(b"\r\n", b"\n")


def retyped(message: bytes, content_type: str) -> bytes:
    """The message with its top-level pkcs7-mime Content-Type replaced (Outlook and old
    clients label the same CMS differently)."""
    new, count = re.subn(
        rb"(?m)^Content-Type: application/pkcs7-mime;[^\r\n]*",
        b"Content-Type: " + content_type.encode(),
        message,
        count=1,
    )
    assert count == 1, "no application/pkcs7-mime Content-Type to rewrite"
    return new


def x_signature(message: bytes) -> bytes:
    """A multipart/signed using the pre-RFC 5751 ``application/x-pkcs7-signature`` name, both in
    the ``protocol`` parameter and on the signature part (the signed part is untouched)."""
    return message.replace(b"application/pkcs7-signature", b"application/x-pkcs7-signature")


# --- the cases --------------------------------------------------------------------------------

Build = Callable[["TestPki", Draft], bytes]


@dataclass(frozen=True)
class Case:
    """One generated message: who sends it, how it is made, who opens it and what must come out."""

    sender: str
    build: Build
    expect: Expect
    openers: tuple[str, ...] = ("bob",)
    # Certificates the reader already holds (harvested earlier), passed as extra_certificates.
    known_certs: tuple[str, ...] = ()


def _legacy_smime(*args: str, recipient: str | None = None) -> Build:
    """The older ``openssl smime`` command: PKCS#7 v1.5 structures and the x-pkcs7 MIME names.
    Its recipient certificates come last, after every option."""

    def build(pki: TestPki, d: Draft) -> bytes:
        tail = [str(pki.cert(recipient))] if recipient else []
        return _openssl([*args, *d.outer, *tail], d.entity, command="smime")

    return build


def _signed(user: str, *extra: str, detached: bool = True) -> Build:
    return lambda pki, d: sign(pki, d.entity, user, *extra, outer=d.outer, detached=detached)


def _encrypted(*extra: str, cipher: str = "-aes256", keyopts: Sequence[str] = ()) -> Build:
    return lambda pki, d: encrypt(
        pki, d.entity, ["bob"], *extra, cipher=cipher, keyopts=keyopts, outer=d.outer
    )


def _valid(user: str, layer: str = "signed") -> Expect:
    return Expect(signature=VALID, signer=f"{user}@example.org", layers=(layer,))


def _decrypted(cipher: str, layer: str = "enveloped", transport: str | None = None) -> Expect:
    return Expect(
        decryption=OK,
        cipher=cipher,
        layers=(layer,),
        key_transport=transport,
        absent_warnings=(WEAK_CIPHER,),
    )


SIGNED_CASES = {
    "detached-multipart-signed": Case("alice", _signed("alice"), _valid("alice")),
    "opaque-nodetach": Case(
        "alice", _signed("alice", detached=False), _valid("alice", "signed-data")
    ),
    "rsa2048-alice": Case("alice", _signed("alice"), _valid("alice")),
    "rsa3072-bob": Case("bob", _signed("bob"), _valid("bob")),
    "ecdsa-p256-carol": Case("carol", _signed("carol"), _valid("carol")),
    "ecdsa-p384-dave": Case("dave", _signed("dave"), _valid("dave")),
    "ecdsa-p521-frank": Case("frank", _signed("frank"), _valid("frank")),
    "ed25519-erin": Case("erin", _signed("erin", "-md", "sha512"), _valid("erin")),
    "ecdsa-brainpool-p256-gisela": Case("gisela", _signed("gisela"), _valid("gisela")),
    "ecdsa-brainpool-p512-ines": Case("ines", _signed("ines", "-md", "sha512"), _valid("ines")),
    "rsa-pss": Case("alice", _signed("alice", "-keyopt", "rsa_padding_mode:pss"), _valid("alice")),
    "sha384": Case("alice", _signed("alice", "-md", "sha384"), _valid("alice")),
    "sha512": Case("alice", _signed("alice", "-md", "sha512"), _valid("alice")),
    "ecdsa-p384-sha384": Case("dave", _signed("dave", "-md", "sha384"), _valid("dave")),
    "sha1-is-weak": Case(
        "alice",
        _signed("alice", "-md", "sha1"),
        Expect(
            signature=SignatureStatus.WEAK_ALGORITHM, signer="alice@example.org", layers=("signed",)
        ),
    ),
    "signer-by-keyid": Case("alice", _signed("alice", "-keyid"), _valid("alice")),
    "no-signed-attributes": Case("alice", _signed("alice", "-noattr"), _valid("alice")),
    "stream-ber-detached": Case("alice", _signed("alice", "-stream"), _valid("alice")),
    "stream-ber-opaque": Case(
        "alice", _signed("alice", "-stream", detached=False), _valid("alice", "signed-data")
    ),
    "der-binary-opaque": Case(
        "alice",
        lambda pki, d: der_wrapped(
            sign(pki, d.entity, "alice", "-outform", "DER", detached=False), "signed-data", d
        ),
        _valid("alice", "signed-data"),
    ),
    "lf-only-detached": Case(
        "alice", lambda pki, d: lf_only(_signed("alice")(pki, d)), _valid("alice")
    ),
    "lf-only-opaque": Case(
        "alice",
        lambda pki, d: lf_only(_signed("alice", detached=False)(pki, d)),
        _valid("alice", "signed-data"),
    ),
    "x-pkcs7-signature": Case(
        "alice", lambda pki, d: x_signature(_signed("alice")(pki, d)), _valid("alice")
    ),
    "x-pkcs7-mime-opaque": Case(
        "alice",
        lambda pki, d: retyped(
            _signed("alice", detached=False)(pki, d),
            'application/x-pkcs7-mime; smime-type=signed-data; name="smime.p7m"',
        ),
        _valid("alice", "signed-data"),
    ),
    "two-signers-rsa-and-ecdsa": Case(
        "alice",
        lambda pki, d: sign(
            pki,
            d.entity,
            "alice",
            *("-signer", str(pki.cert("carol")), "-inkey", str(pki.key("carol"))),
            outer=d.outer,
        ),
        _valid("alice"),
    ),
    "receipt-requested": Case(
        "alice",
        _signed("alice", "-receipt_request_all", "-receipt_request_to", "alice@example.org"),
        _valid("alice"),
    ),
    "crlf-line-ends-everywhere": Case("alice", _signed("alice", "-crlfeol"), _valid("alice")),
    "signer-certificate-left-out-but-known": Case(
        "alice", _signed("alice", "-nocerts"), _valid("alice"), known_certs=("alice",)
    ),
    "legacy-openssl-smime-command": Case(
        "alice",
        lambda pki, d: _legacy_smime(
            "-sign",
            *("-signer", str(pki.cert("alice")), "-inkey", str(pki.key("alice"))),
            *("-certfile", str(pki.intermediate)),
        )(pki, d),
        _valid("alice"),
    ),
    "outlook-octet-stream-opaque": Case(
        "alice",
        lambda pki, d: retyped(
            _signed("alice", detached=False)(pki, d), "application/octet-stream; name=smime.p7m"
        ),
        _valid("alice", "signed-data"),
    ),
}

ENCRYPTED_CASES = {
    "rsa-pkcs1v15": Case(
        "alice", _encrypted(), _decrypted("aes-256-cbc", transport="rsa-pkcs1v15")
    ),
    "rsa-oaep-sha256": Case(
        "alice",
        _encrypted(keyopts=("rsa_padding_mode:oaep", "rsa_oaep_md:sha256")),
        _decrypted("aes-256-cbc", transport="rsa-oaep-sha256"),
    ),
    "recipient-by-keyid": Case("alice", _encrypted("-keyid"), _decrypted("aes-256-cbc")),
    "ecdh-p256-carol": Case(
        "alice",
        lambda pki, d: encrypt(pki, d.entity, ["carol"], outer=d.outer),
        _decrypted("aes-256-cbc", transport="ecdh-p256-sha1"),
        openers=("carol",),
    ),
    "ecdh-p256-sha256kdf-carol": Case(
        "alice",
        lambda pki, d: encrypt(
            pki, d.entity, ["carol"], keyopts=("ecdh_kdf_md:sha256",), outer=d.outer
        ),
        _decrypted("aes-256-cbc", transport="ecdh-p256-sha256"),
        openers=("carol",),
    ),
    "ecdh-p384-dave": Case(
        "alice",
        lambda pki, d: encrypt(pki, d.entity, ["dave"], outer=d.outer),
        _decrypted("aes-256-cbc", transport="ecdh-p384-sha1"),
        openers=("dave",),
    ),
    "ecdh-p521-frank": Case(
        "alice",
        lambda pki, d: encrypt(pki, d.entity, ["frank"], outer=d.outer),
        _decrypted("aes-256-cbc", transport="ecdh-p521-sha1"),
        openers=("frank",),
    ),
    **{
        f"ecdh-brainpool-{curve}-{user}": Case(
            "alice",
            lambda pki, d, user=user, kdf=kdf: encrypt(
                pki, d.entity, [user], keyopts=(f"ecdh_kdf_md:{kdf}",), outer=d.outer
            ),
            _decrypted("aes-256-cbc", transport=f"ecdh-{curve}-{kdf}"),
            openers=(user,),
        )
        for curve, user, kdf in (
            ("bp256", "gisela", "sha256"),
            ("bp384", "hedda", "sha384"),
            ("bp512", "ines", "sha512"),
        )
    },
    "ecdh-recipient-by-keyid-aes128-wrap": Case(
        "alice",
        lambda pki, d: encrypt(
            pki, d.entity, ["carol"], "-keyid", "-wrap", "aes128-wrap", outer=d.outer
        ),
        _decrypted("aes-256-cbc", transport="ecdh-p256-sha1"),
        openers=("carol",),
    ),
    "aes-128-cbc": Case("alice", _encrypted(cipher="-aes128"), _decrypted("aes-128-cbc")),
    "aes-192-cbc": Case("alice", _encrypted(cipher="-aes192"), _decrypted("aes-192-cbc")),
    "aes-256-cbc": Case("alice", _encrypted(cipher="-aes256"), _decrypted("aes-256-cbc")),
    # National ciphers: Camellia (RFC 3657) and SEED (RFC 4010, in OpenSSL's legacy provider).
    **{
        f"camellia-{bits}-cbc": Case(
            "alice", _encrypted(cipher=f"-camellia{bits}"), _decrypted(f"camellia-{bits}-cbc")
        )
        for bits in (128, 192, 256)
    },
    "seed-cbc": Case(
        "alice",
        _encrypted("-provider", "legacy", "-provider", "default", cipher="-seed"),
        _decrypted("seed-cbc"),
    ),
    "aes-128-gcm": Case(
        "alice",
        _encrypted(cipher="-aes-128-gcm"),
        _decrypted("aes-128-gcm", layer="auth-enveloped"),
    ),
    "aes-256-gcm": Case(
        "alice",
        _encrypted(cipher="-aes-256-gcm"),
        _decrypted("aes-256-gcm", layer="auth-enveloped"),
    ),
    "3des-weak-cipher": Case(
        "alice",
        _encrypted(cipher="-des3"),
        Expect(decryption=OK, cipher="3des-cbc", layers=("enveloped",), warnings=(WEAK_CIPHER,)),
    ),
    "3des-to-ecdh-recipient": Case(
        "alice",
        lambda pki, d: encrypt(pki, d.entity, ["carol"], cipher="-des3", outer=d.outer),
        Expect(decryption=OK, cipher="3des-cbc", layers=("enveloped",), warnings=(WEAK_CIPHER,)),
        openers=("carol",),
    ),
    "stream-ber": Case("alice", _encrypted("-stream"), _decrypted("aes-256-cbc")),
    "stream-ber-gcm": Case(
        "alice",
        _encrypted("-stream", cipher="-aes-256-gcm"),
        _decrypted("aes-256-gcm", layer="auth-enveloped"),
    ),
    "der-binary": Case(
        "alice",
        lambda pki, d: der_wrapped(
            encrypt(pki, d.entity, ["bob"], "-outform", "DER"), "enveloped-data", d
        ),
        _decrypted("aes-256-cbc"),
    ),
    "lf-only": Case(
        "alice", lambda pki, d: lf_only(_encrypted()(pki, d)), _decrypted("aes-256-cbc")
    ),
    "x-pkcs7-mime": Case(
        "alice",
        lambda pki, d: retyped(
            _encrypted()(pki, d),
            'application/x-pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"',
        ),
        _decrypted("aes-256-cbc"),
    ),
    "outlook-octet-stream": Case(
        "alice",
        lambda pki, d: retyped(_encrypted()(pki, d), "application/octet-stream; name=smime.p7m"),
        _decrypted("aes-256-cbc"),
    ),
    "legacy-openssl-smime-command-3des": Case(
        "alice",
        _legacy_smime("-encrypt", recipient="bob"),
        Expect(decryption=OK, cipher="3des-cbc", layers=("enveloped",), warnings=(WEAK_CIPHER,)),
    ),
    "last-of-three-recipients": Case(
        "alice",
        lambda pki, d: encrypt(pki, d.entity, ["alice", "carol", "bob"], outer=d.outer),
        _decrypted("aes-256-cbc", transport="rsa-pkcs1v15"),
    ),
}


def _sign_then_encrypt(pki: TestPki, d: Draft, cipher: str = "-aes256") -> bytes:
    return encrypt(
        pki, sign(pki, d.entity, "alice"), ["bob", "alice"], cipher=cipher, outer=d.outer
    )


def _encrypt_then_sign(pki: TestPki, d: Draft) -> bytes:
    return sign(pki, encrypt(pki, d.entity, ["bob", "alice"]), "alice", outer=d.outer)


def _triple_wrap(pki: TestPki, d: Draft) -> bytes:
    inner = sign(pki, d.entity, "alice")
    return sign(pki, encrypt(pki, inner, ["bob", "alice"]), "alice", outer=d.outer)


NESTED_CASES = {
    "sign-then-encrypt": Case(
        "alice",
        _sign_then_encrypt,
        Expect(OK, VALID, "alice@example.org", ("enveloped", "signed"), "aes-256-cbc"),
    ),
    "sign-then-encrypt-gcm": Case(
        "alice",
        lambda pki, d: _sign_then_encrypt(pki, d, cipher="-aes-128-gcm"),
        Expect(OK, VALID, "alice@example.org", ("auth-enveloped", "signed"), "aes-128-gcm"),
    ),
    "opaque-sign-then-encrypt": Case(
        "alice",
        lambda pki, d: encrypt(
            pki, sign(pki, d.entity, "alice", detached=False), ["bob"], outer=d.outer
        ),
        Expect(OK, VALID, "alice@example.org", ("enveloped", "signed-data"), "aes-256-cbc"),
    ),
    "encrypt-then-sign": Case(
        "alice",
        _encrypt_then_sign,
        Expect(OK, VALID, "alice@example.org", ("signed", "enveloped"), "aes-256-cbc"),
    ),
    "compressed-then-signed": Case(
        "alice",
        lambda pki, d: sign(pki, _openssl(["-compress"], d.entity), "alice", outer=d.outer),
        Expect(signature=VALID, signer="alice@example.org", layers=("signed", "compressed")),
    ),
    "triple-wrap": Case(
        "alice",
        _triple_wrap,
        Expect(OK, VALID, "alice@example.org", ("signed", "enveloped", "signed"), "aes-256-cbc"),
    ),
}


def _defect(user: str, status: SignatureStatus, signer: str | None = None) -> Case:
    return Case(
        user if user != "wrongaddr" else "alice",
        _signed(user),
        Expect(signature=status, signer=signer or f"{user}@example.org", layers=("signed",)),
    )


CERTIFICATE_CASES = {
    "expired": _defect("expired", SignatureStatus.EXPIRED),
    "not-yet-valid": _defect("future", SignatureStatus.NOT_YET_VALID),
    "server-auth-only-eku": _defect("noeku", SignatureStatus.BAD_EKU),
    "address-is-not-from": _defect(
        "wrongaddr", SignatureStatus.EMAIL_MISMATCH, "mallory@example.net"
    ),
    "rogue-root-untrusted": _defect("rogue", SignatureStatus.UNTRUSTED),
    "no-eku-address-in-subject-valid": _defect("olga", VALID),
}

# Cases a tool cannot produce: named with the error measured here. strict: if the tool learns to,
# the case must be turned into a real one.
TOOL_LIMITS = {
    "signed/ed25519-erin": "OpenSSL 3.0 cannot sign CMS with Ed25519 "
    "(eddsa_digest_signverify_init:invalid digest; with -noattr: operation not supported)",
    "nested/compressed-then-signed": "this OpenSSL is built without zlib: "
    "'CMS_compress:unsupported compression algorithm'",
}


def _address(pki: TestPki, case: Case) -> str:
    return pki.email(case.sender)


# Every form openssl writes, by group: how it signs, how it encrypts, layers nested in each
# order, and the certificate defects that must give their own status.
ALL_CASES = {
    f"{group}/{name}": case
    for group, cases in (
        ("signed", SIGNED_CASES),
        ("encrypted", ENCRYPTED_CASES),
        ("nested", NESTED_CASES),
        ("certificate", CERTIFICATE_CASES),
    )
    for name, case in cases.items()
}


@pytest.mark.parametrize("case", interop_params(ALL_CASES, TOOL_LIMITS))
def test_openssl_message_opens_with_expected_verdict(
    case: Case,
    request: pytest.FixtureRequest,
    pki: TestPki,
    identities: dict[str, Identity],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> None:
    draft = Draft(marker=f"interop-openssl {request.node.callspec.id}", sender=_address(pki, case))
    message = case.build(pki, draft)
    known = [load_cert(pki.cert(u)) for u in case.known_certs]
    result = open_message(
        message,
        identities=[identities[u] for u in case.openers],
        anchors=anchors,
        at=now,
        extra_certificates=[*known, load_cert(pki.intermediate)] if known else (),
    )
    check_opened(result, case.expect, draft.marker, draft.sender)


def test_openssl_signed_message_with_altered_body_is_invalid(
    pki: TestPki, anchors: Sequence[x509.Certificate], now: dt.datetime
) -> None:
    draft = Draft(marker="interop-openssl altered", sender="alice@example.org")
    message = sign(pki, draft.entity, "alice", outer=draft.outer)
    altered = message.replace(b"Bye.", b"Bye!", 1)
    assert altered != message
    result = open_message(altered, anchors=anchors, at=now)
    assert result.signature == SignatureStatus.INVALID
    assert result.layers[0].signers[0].status == SignatureStatus.INVALID


def test_openssl_message_for_someone_else_reports_no_key(
    pki: TestPki,
    identities: dict[str, Identity],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> None:
    draft = Draft(marker="interop-openssl not for bob", sender="bob@example.org")
    message = encrypt(pki, draft.entity, ["alice", "carol"], outer=draft.outer)
    result = open_message(message, identities=[identities["bob"]], anchors=anchors, at=now)
    assert result.decryption == Decryption.NO_KEY
    assert result.error is not None
    # The content stays the sealed entity: nothing of the body leaks out.
    assert b"Hello," not in result.content and b"Bye." not in result.content


def test_aria_is_named_when_it_cannot_be_opened(
    pki: TestPki, identities: dict[str, Identity], now: dt.datetime
) -> None:
    # ARIA (RFC 5794, Korea): cryptography has no ARIA, so the message says which cipher it is.
    message = encrypt(pki, mime_message(), ["bob"], cipher="-aria128")
    result = open_message(message, identities=[identities["bob"]], at=now)
    assert result.decryption == Decryption.UNSUPPORTED
    assert "aria-128-cbc" in (result.error or "")
