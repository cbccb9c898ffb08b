"""A throwaway S/MIME test PKI, written to a directory: for the demo and the test suite.

Layout made by :func:`make_test_pki` (every file PEM unless named .p12 / .der):

    root.pem, root.key.pem            self-signed root CA
    intermediate.pem, .key.pem        intermediate CA whose only EKU is emailProtection
    rogue-root.pem                    a second root that is never a trust anchor
    USER.cert.pem, USER.key.pem       one per user below (key PKCS#8, unencrypted)
    USER.chain.pem                    USER's certificate followed by the intermediate
    USER.p12                          key + certificate + intermediate, password PKCS12_PASSWORD

Users (see ``USERS``): RSA-2048, RSA-3072, P-256, P-384, P-521 and Ed25519 people, plus
certificates that are expired, not yet valid, without emailProtection, for another address, and
issued by the rogue CA. Never use these keys for anything but tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PKCS12_PASSWORD = "test"


@dataclass(frozen=True)
class UserSpec:
    name: str
    email: str
    key_type: str  # "rsa2048", "rsa3072", "p256", "p384", "p521", "bp256"..."bp512", "ed25519"
    issuer: str = "intermediate"  # or "rogue"
    validity: str = "current"  # "current", "expired", "future"
    eku: str = "email"  # "email", "server" (no emailProtection), "none" (no EKU extension)
    email_in: str = "san"  # "san" or "subject" (emailAddress attribute only, no SAN)


USERS: tuple[UserSpec, ...] = (
    UserSpec("alice", "alice@example.org", "rsa2048"),
    UserSpec("bob", "bob@example.org", "rsa3072"),
    UserSpec("carol", "carol@example.org", "p256"),
    UserSpec("dave", "dave@example.org", "p384"),
    UserSpec("frank", "frank@example.org", "p521"),
    UserSpec("erin", "erin@example.org", "ed25519"),
    # Brainpool (RFC 5639), as German public-sector CAs issue them.
    UserSpec("gisela", "gisela@example.org", "bp256"),
    UserSpec("hedda", "hedda@example.org", "bp384"),
    UserSpec("ines", "ines@example.org", "bp512"),
    UserSpec("olga", "olga@example.org", "rsa2048", eku="none", email_in="subject"),
    UserSpec("expired", "expired@example.org", "rsa2048", validity="expired"),
    UserSpec("future", "future@example.org", "rsa2048", validity="future"),
    UserSpec("noeku", "noeku@example.org", "rsa2048", eku="server"),
    UserSpec("wrongaddr", "mallory@example.net", "rsa2048"),
    UserSpec("rogue", "rogue@example.org", "rsa2048", issuer="rogue"),
)


@dataclass(frozen=True)
class TestPki:
    """Paths of a generated test PKI."""

    __test__ = False  # not a pytest test class, despite its name

    directory: Path

    def cert(self, user: str) -> Path:
        return self.directory / f"{user}.cert.pem"

    def key(self, user: str) -> Path:
        return self.directory / f"{user}.key.pem"

    def chain(self, user: str) -> Path:
        return self.directory / f"{user}.chain.pem"

    def p12(self, user: str) -> Path:
        return self.directory / f"{user}.p12"

    @property
    def root(self) -> Path:
        return self.directory / "root.pem"

    @property
    def intermediate(self) -> Path:
        return self.directory / "intermediate.pem"

    @property
    def rogue_root(self) -> Path:
        return self.directory / "rogue-root.pem"

    def email(self, user: str) -> str:
        return next(u.email for u in USERS if u.name == user)


def _new_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {
        "p256": ec.SECP256R1(),
        "p384": ec.SECP384R1(),
        "p521": ec.SECP521R1(),
        "bp256": ec.BrainpoolP256R1(),
        "bp384": ec.BrainpoolP384R1(),
        "bp512": ec.BrainpoolP512R1(),
    }[key_type]
    return ec.generate_private_key(curve)


def write_key(path: Path, key: CertificateIssuerPrivateKeyTypes) -> None:
    """``key`` as unencrypted PKCS#8 PEM at ``path``."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(
    name: str,
    key: CertificateIssuerPrivateKeyTypes,
    issuer_cert: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
    email_only_eku: bool,
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-companion test"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=3650))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    if email_only_eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _user_cert(
    spec: UserSpec,
    key: CertificateIssuerPrivateKeyTypes,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: dt.datetime,
) -> x509.Certificate:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, spec.name.capitalize())]
    if spec.email_in == "subject":
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, spec.email))
    if spec.validity == "expired":
        not_before, not_after = now - dt.timedelta(days=730), now - dt.timedelta(days=365)
    elif spec.validity == "future":
        not_before, not_after = now + dt.timedelta(days=365), now + dt.timedelta(days=730)
    else:
        not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=730)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=is_ec,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if spec.email_in == "san":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(spec.email)]), critical=False
        )
    if spec.eku == "email":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    elif spec.eku == "server":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_test_pki(directory: Path, now: dt.datetime | None = None) -> TestPki:
    """Create the test PKI in ``directory`` (created if missing) and return its paths.

    ``now`` anchors the validity periods (default: the current time). Takes about a second, most
    of it generating the RSA-3072 key.
    """
    now = now or dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True)

    root_key = _new_key("rsa2048")
    root = _ca("Test Root CA", root_key, None, root_key, now, email_only_eku=False)
    inter_key = _new_key("rsa2048")
    inter = _ca("Test Email CA", inter_key, root, root_key, now, email_only_eku=True)
    rogue_key = _new_key("rsa2048")
    rogue = _ca("Rogue Root CA", rogue_key, None, rogue_key, now, email_only_eku=False)

    (directory / "root.pem").write_bytes(_pem(root))
    write_key(directory / "root.key.pem", root_key)
    (directory / "intermediate.pem").write_bytes(_pem(inter))
    write_key(directory / "intermediate.key.pem", inter_key)
    (directory / "rogue-root.pem").write_bytes(_pem(rogue))

    for spec in USERS:
        key = _new_key(spec.key_type)
        rogue_issued = spec.issuer == "rogue"
        issuer_cert, issuer_key = (rogue, rogue_key) if rogue_issued else (inter, inter_key)
        cert = _user_cert(spec, key, issuer_cert, issuer_key, now)
        write_key(directory / f"{spec.name}.key.pem", key)
        (directory / f"{spec.name}.cert.pem").write_bytes(_pem(cert))
        (directory / f"{spec.name}.chain.pem").write_bytes(_pem(cert) + _pem(issuer_cert))
        (directory / f"{spec.name}.p12").write_bytes(
            pkcs12.serialize_key_and_certificates(
                spec.name.encode(),
                key,  # type: ignore[arg-type]
                cert,
                [issuer_cert],
                serialization.BestAvailableEncryption(PKCS12_PASSWORD.encode()),
            )
        )
    return TestPki(directory)


def main(argv: list[str] | None = None) -> int:
    """``python -m smime_companion.testing.pki DIR``: write a test PKI into DIR."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m smime_companion.testing.pki DIR", file=sys.stderr)
        return 2
    pki = make_test_pki(Path(args[0]))
    print(f"test PKI written to {pki.directory} (PKCS#12 password: {PKCS12_PASSWORD!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
