"""The certificate and identity store: records per address, TOFU pins and key changes, the user's
trust decisions, own identities kept encrypted, and the database file itself.

``issue_certificate`` (used by the other certificate-store test files too) makes extra
certificates from the test PKI's intermediate CA, or self-signed ones, at test time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from smime_companion import keyfiles
from smime_companion.core.cert_vocabulary import Trust
from smime_companion.core.model import Identity
from smime_companion.core.open import open_message
from smime_companion.core.selection import NoCertificate, Selected
from smime_companion.core.verdicts import Decryption
from smime_companion.errors import CacheError, UsageError
from smime_companion.store.certstore import DB_FILENAME, CertStore, Sighting, expiry_warnings
from smime_companion.testing.pki import PKCS12_PASSWORD
from tests.conftest import load_cert
from tests.tools import openssl_cms

if TYPE_CHECKING:
    from smime_companion.testing.pki import TestPki

KEY = "certstore test key"


def issue_certificate(
    pki: TestPki,
    address: str,
    now: dt.datetime,
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    usage: str = "both",
    self_signed: bool = False,
    days: tuple[int, int] = (-1, 365),
    ocsp_url: str | None = None,
    crl_url: str | None = None,
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """A certificate for ``address`` issued by the test PKI's intermediate (or self-signed),
    with its key. ``usage``: ``both``, ``sign`` (digitalSignature only) or ``encrypt``
    (keyEncipherment / keyAgreement only). ``days`` is the validity relative to ``now``."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address.split("@")[0])])
    if self_signed:
        issuer_name, issuer_key = subject, key
    else:
        issuer_name = load_cert(pki.intermediate).subject
        issuer_key = serialization.load_pem_private_key(  # type: ignore[assignment]
            (pki.directory / "intermediate.key.pem").read_bytes(), password=None
        )
    sign, encrypt = usage in ("both", "sign"), usage in ("both", "encrypt")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=sign,
                content_commitment=False,
                key_encipherment=encrypt and not is_ec,
                data_encipherment=False,
                key_agreement=encrypt and is_ec,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                    )
                ]
            ),
            critical=False,
        )
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(crl_url)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CertStore]:
    with CertStore.open(tmp_path / "store", KEY) as opened:
        yield opened


def _seen(
    cert: x509.Certificate,
    at: dt.datetime,
    *,
    anchored: bool = False,
    tofu: bool = True,
    source: str = "<m@example.org>",
) -> Sighting:
    addresses = frozenset(
        n.lower() for n in cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.RFC822Name)
    ) if tofu else frozenset()  # fmt: skip
    return Sighting(cert, source, at, anchored=anchored, tofu_addresses=addresses)


# --- records and TOFU ----------------------------------------------------------------------------


def test_a_recorded_certificate_survives_reopening_with_its_addresses_times_and_source(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    cert = load_cert(pki.cert("alice"))
    with CertStore.open(tmp_path, KEY) as store:
        store.record(
            Sighting(cert, "<first@example.org>", now, anchored=True, capabilities=("aes-256-gcm",))
        )
        store.record(Sighting(cert, "<second@example.org>", now + dt.timedelta(hours=1), True))
    with CertStore.open(tmp_path, KEY) as store:
        (record,) = store.records("Alice@Example.org")
    assert record.trust == Trust.ANCHOR
    assert record.source == "<first@example.org>"
    assert record.first_seen == now.replace(microsecond=0)
    assert record.last_seen == (now + dt.timedelta(hours=1)).replace(microsecond=0)
    assert record.capabilities == ("aes-256-gcm",)


def test_the_database_file_is_encrypted_and_a_wrong_key_is_refused(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    cert = load_cert(pki.cert("alice"))
    with CertStore.open(tmp_path, KEY) as store:
        store.record(Sighting(cert, "<m@example.org>", now, anchored=True))
    raw = (tmp_path / DB_FILENAME).read_bytes()
    assert not raw.startswith(b"SQLite format 3")
    assert b"alice@example.org" not in raw
    with pytest.raises(CacheError, match="wrong cache key"):
        CertStore.open(tmp_path, "another key")


def test_the_first_untrusted_key_is_pinned_and_a_second_key_is_flagged_key_changed(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    first, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    second, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    (pinned,) = store.record(_seen(first, now))
    (changed,) = store.record(_seen(second, now + dt.timedelta(minutes=5)))
    assert pinned.trust == Trust.TOFU
    assert changed.trust == Trust.KEY_CHANGED
    selection = store.select("pat@example.net", now + dt.timedelta(hours=1))
    assert isinstance(selection, Selected)
    assert selection.record.fingerprint == pinned.fingerprint


def test_a_key_changed_certificate_is_selected_only_after_the_user_trusts_it(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    first, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    second, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True, days=(0, 400))
    store.record(_seen(first, now))
    (changed,) = store.record(_seen(second, now))
    later = now + dt.timedelta(hours=1)
    before = store.select("pat@example.net", later)
    assert isinstance(before, Selected) and before.record.fingerprint != changed.fingerprint
    (trusted,) = store.trust(changed.fingerprint[:12])
    assert trusted.trust == Trust.TOFU
    after = store.select("pat@example.net", later)
    assert isinstance(after, Selected) and after.record.fingerprint == changed.fingerprint
    # The old pin was replaced, not kept beside the confirmed key.
    old = [r for r in store.records("pat@example.net") if r.fingerprint != changed.fingerprint]
    assert [r.trust for r in old] == [Trust.UNTRUSTED]


def test_a_renewed_certificate_with_the_same_key_stays_pinned(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    first, key = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    renewed, _ = issue_certificate(pki, "pat@example.net", now, key=key, self_signed=True)
    store.record(_seen(first, now))
    (record,) = store.record(_seen(renewed, now))
    assert record.trust == Trust.TOFU


def test_an_untrusted_key_is_flagged_key_changed_when_the_address_has_an_anchored_one(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    store.record(Sighting(load_cert(pki.cert("alice")), "<a@x>", now, anchored=True))
    impostor, _ = issue_certificate(pki, "alice@example.org", now, self_signed=True)
    (record,) = store.record(_seen(impostor, now))
    assert record.trust == Trust.KEY_CHANGED


def test_without_a_tofu_policy_an_untrusted_certificate_is_kept_but_never_selected(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    cert, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    (record,) = store.record(_seen(cert, now, tofu=False))
    assert record.trust == Trust.UNTRUSTED
    selection = store.select("pat@example.net", now)
    assert isinstance(selection, NoCertificate)
    assert "not trusted" in selection.reason


def test_a_certificate_seen_later_through_an_anchor_is_raised_to_anchor(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    cert = load_cert(pki.cert("bob"))
    store.record(_seen(cert, now, tofu=False))
    (record,) = store.record(Sighting(cert, "<later@x>", now, anchored=True))
    assert record.trust == Trust.ANCHOR


def test_forget_removes_the_certificate_from_every_address(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    (record,) = store.record(Sighting(load_cert(pki.cert("bob")), "<m@x>", now, anchored=True))
    assert store.forget(record.fingerprint.upper()) == record.fingerprint
    assert store.records() == []


@pytest.mark.parametrize(
    "typed, problem",
    [("zz", "not a certificate fingerprint"), ("0123456789abcdef", "no certificate")],
)
def test_an_unknown_or_malformed_fingerprint_is_one_usage_error(
    store: CertStore, typed: str, problem: str
) -> None:
    with pytest.raises(UsageError, match=problem):
        store.trust(typed)


# --- own identities ------------------------------------------------------------------------------


def test_an_identity_imported_from_pkcs12_still_decrypts_after_a_newer_one_replaces_it(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    old = keyfiles.load_pkcs12(pki.p12("alice"), PKCS12_PASSWORD.encode())
    new_cert, new_key = issue_certificate(pki, "alice@example.org", now)
    entity = b"Content-Type: text/plain\r\n\r\nfor the old key\r\n"
    cms = openssl_cms(["-encrypt", "-aes-256-cbc", "-from", "bob@example.org", "-to",
                       "alice@example.org", pki.cert("alice")], entity)  # fmt: skip
    with CertStore.open(tmp_path, KEY) as store:
        store.import_identity(old, now)
        store.import_identity(
            Identity(key=new_key, certificate=new_cert),
            now + dt.timedelta(days=1),  # type: ignore[arg-type]
        )
    with CertStore.open(tmp_path, KEY) as store:
        listed = store.identities_listed()
        identities = store.identities()
    assert [i.current for i in listed] == [True, False]
    assert identities[0].certificate == new_cert
    assert identities[1].certificate == old.certificate and identities[1].chain == old.chain
    result = open_message(cms, identities=identities, at=now)
    assert result.decryption == Decryption.OK
    assert b"for the old key" in result.content


def test_private_keys_are_never_stored_in_the_clear(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    identity = keyfiles.load_pkcs12(pki.p12("bob"), PKCS12_PASSWORD.encode())
    with CertStore.open(tmp_path, KEY) as store:
        store.import_identity(identity, now)
    key_der = identity.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert key_der[-64:] not in data
        assert b"PRIVATE KEY" not in data
        assert path.stat().st_mode & 0o077 == 0


def test_expiry_warnings_name_a_current_identity_expiring_within_30_days_only(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    soon, soon_key = issue_certificate(pki, "me@example.org", now, days=(-300, 20))
    with CertStore.open(tmp_path, KEY) as store:
        store.import_identity(
            Identity(key=soon_key, certificate=soon),  # type: ignore[arg-type]
            now,
        )
        assert expiry_warnings(store.identities_listed(), now) == [
            f"identity me@example.org expires on {soon.not_valid_after_utc.date()} (in 20 days)"
        ]
        assert expiry_warnings(store.identities_listed(), now - dt.timedelta(days=30)) == []
        # Once replaced, the old identity's expiry is no longer news.
        store.import_identity(keyfiles.load_pkcs12(pki.p12("bob"), b"test"), now)
        assert expiry_warnings(store.identities_listed(), now) == []


def test_rekey_re_encrypts_the_store_under_the_new_key_only(
    tmp_path: Path, pki: TestPki, now: dt.datetime
) -> None:
    with CertStore.open(tmp_path, KEY) as store:
        store.record(Sighting(load_cert(pki.cert("alice")), "<m@x>", now, anchored=True))
        store.rekey("the new key")
    with pytest.raises(CacheError, match="wrong cache key"):
        CertStore.open(tmp_path, KEY)
    with CertStore.open(tmp_path, "the new key") as store:
        assert [r.address for r in store.records()] == ["alice@example.org"]


def test_an_encryption_certificate_named_by_a_pinned_signature_is_pinned_with_it(
    store: CertStore, pki: TestPki, now: dt.datetime
) -> None:
    signing, _ = issue_certificate(pki, "pat@example.net", now, usage="sign", self_signed=True)
    encryption, _ = issue_certificate(
        pki, "pat@example.net", now, usage="encrypt", self_signed=True
    )
    store.record(_seen(signing, now))
    (companion,) = store.record(
        Sighting(encryption, "<m@x>", now, anchored=False, companions=(signing,),
                 tofu_addresses=frozenset({"pat@example.net"}))
    )  # fmt: skip
    assert companion.trust == Trust.TOFU
    # Without that signature's backing, the same kind of certificate is a changed key.
    stranger, _ = issue_certificate(pki, "pat@example.net", now, usage="encrypt", self_signed=True)
    (flagged,) = store.record(_seen(stranger, now))
    assert flagged.trust == Trust.KEY_CHANGED
