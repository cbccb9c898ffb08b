"""Real-world messages that used to fail (issue 16): legacy certificates, bare .p7m files, mbox
separators, and the quirks of gpgsm and NSS. One section per class of the issue.

Every certificate and message is made at test time by a tool we did not write: ``openssl req``,
``openssl x509 -req`` (SHA-1 and MD5 CAs, an RSA-1024 signer, a version-1 root), ``openssl cms``
(``-nocerts``, ``-outform DER/PEM``, ``-binary``), ``gpgsm --include-certs 0`` and ``gpgsm
--export-secret-key-p12 --armor``; the three public vectors are the RFC 9216 keys' examples in
tests/vectors (origin and licence in tests/interop_cases.md). Certificates that ``openssl x509``
makes are valid from the moment it ran, so those tests judge them an hour later.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion import keyfiles
from smime_companion.core import der_writer
from smime_companion.core.cert_loading import load_certificate
from smime_companion.core.mime import first_field
from smime_companion.core.model import OpenResult
from smime_companion.core.open import open_message
from smime_companion.core.text import extract_text
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.errors import KeyLoadError
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki
from tests.conftest import load_cert, load_identity
from tests.peers import GpgsmHome, NssDb, _with_outer, multipart_signed_entity, split_message
from tests.tools import mime_message, minimal_env, openssl_cms, run

S = SignatureStatus
VECTORS = Path(__file__).parent / "vectors"
CLI = [sys.executable, "-m", "smime_companion"]
MESSAGE = mime_message(body="Hello Bob,\r\nthe quarterly figures.\r\n", sender="old@example.org")
EXT = (
    "subjectAltName=email:old@example.org\nextendedKeyUsage=emailProtection\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n"
)


def _cli(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        timeout=120,
        env=env or minimal_env(P12_PASSWORD=PKCS12_PASSWORD, XDG_CONFIG_HOME="/nonexistent"),
    )


def _user(
    directory: Path,
    name: str,
    ca: Path,
    ca_key: Path,
    *,
    digest: str = "sha256",
    bits: int = 2048,
    days: int = 30,
) -> tuple[Path, Path]:
    """A user certificate (old@example.org, email EKU) made by ``openssl x509 -req``."""
    key, csr = directory / f"{name}.key.pem", directory / f"{name}.csr.pem"
    cert, ext = directory / f"{name}.cert.pem", directory / f"{name}.ext"
    ext.write_text(EXT)
    run(["openssl", "req", "-new", "-newkey", f"rsa:{bits}", "-nodes", "-keyout", key,
         "-subj", f"/CN={name}", "-out", csr])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         f"-{digest}", "-days", str(days), "-extfile", ext, "-out", cert])  # fmt: skip
    return cert, key


def _sign(cert: Path, key: Path, extra: Sequence[str | Path] = (), data: bytes = MESSAGE) -> bytes:
    return openssl_cms(["-sign", "-signer", cert, "-inkey", key, *extra], data)


def _open(message: bytes, anchors: Sequence[x509.Certificate], at: dt.datetime, **kw) -> OpenResult:
    return open_message(message, anchors=anchors, at=at, **kw)


def _an_hour_after(cert: Path) -> dt.datetime:
    return load_cert(cert).not_valid_before_utc + dt.timedelta(hours=1)


# --- 1. certificates signed with SHA-1 or MD5 ---------------------------------------------------


@pytest.fixture(scope="module")
def old_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A root made with ``openssl req -x509 -sha1``, as CAs were until about 2016."""
    directory = tmp_path_factory.mktemp("old-ca")
    cert, key = directory / "ca.pem", directory / "ca.key.pem"
    run(["openssl", "req", "-x509", "-sha1", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-subj", "/CN=Old SHA-1 Root", "-days", "3650", "-out", cert,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])  # fmt: skip
    return cert, key


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_an_old_hash_chain_is_weak_by_default_and_valid_for_archives(
    old_ca: tuple[Path, Path], tmp_path: Path, digest: str
) -> None:
    cert, key = _user(tmp_path, "old", *old_ca, digest=digest)
    anchors = [load_cert(old_ca[0])]
    at = _an_hour_after(cert)
    message = _sign(cert, key)
    strict = _open(message, anchors, at)
    assert strict.signature == S.WEAK_ALGORITHM, strict.layers
    assert "weak-algorithm" in strict.warnings
    # --allow-sha1 accepts a SHA-1 chain, never an MD5-signed certificate.
    sha1_only = _open(message, anchors, at, allow_sha1=True)
    assert sha1_only.signature == (S.VALID if digest == "sha1" else S.WEAK_ALGORITHM)
    # The archive option accepts both, and still says the message is weak.
    archive = _open(message, anchors, at, allow_weak=True)
    assert archive.signature == S.VALID, archive.layers
    assert "weak-algorithm" in archive.warnings
    name = "SHA-1" if digest == "sha1" else "MD5"
    assert any(name in w for w in archive.signers[0].weaknesses)


# --- 2. a weak algorithm never masks the real diagnosis ------------------------------------------


@pytest.fixture(scope="module")
def rsa1024(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An RSA-1024 signer (valid 30 days) issued by the test intermediate."""
    return _user(
        tmp_path_factory.mktemp("rsa1024"), "small", pki.intermediate,
        pki.directory / "intermediate.key.pem", bits=1024,
    )  # fmt: skip


def test_an_expired_rsa1024_signer_is_expired_with_the_weakness_beside_it(
    pki: TestPki, rsa1024: tuple[Path, Path], anchors: tuple[x509.Certificate, ...]
) -> None:
    message = _sign(*rsa1024, ["-certfile", pki.intermediate])
    later = _an_hour_after(rsa1024[0]) + dt.timedelta(days=400)
    result = _open(message, anchors, later)
    assert result.signature == S.EXPIRED
    assert "weak-algorithm" in result.warnings
    signer = result.signers[0]
    assert [p[0] for p in signer.problems] == [S.EXPIRED, S.WEAK_ALGORITHM]
    assert "RSA-1024" in signer.weaknesses[0]


def test_a_weak_signer_for_another_address_is_email_mismatch(
    pki: TestPki, rsa1024: tuple[Path, Path], anchors: tuple[x509.Certificate, ...]
) -> None:
    other = mime_message(sender="alice@example.org")
    result = _open(
        _sign(*rsa1024, ["-certfile", pki.intermediate], other),
        anchors,
        _an_hour_after(rsa1024[0]),
    )
    assert result.signature == S.EMAIL_MISMATCH
    assert "weak-algorithm" in result.warnings


def test_a_weak_signer_from_an_unknown_root_is_untrusted_and_every_problem_is_listed(
    rsa1024: tuple[Path, Path], anchors: tuple[x509.Certificate, ...]
) -> None:
    # No intermediate in the message: no path. The weakness is still found and listed.
    result = _open(_sign(*rsa1024, ["-md", "sha1"]), anchors, _an_hour_after(rsa1024[0]))
    assert result.signature == S.UNTRUSTED
    statuses = [p[0] for p in result.signers[0].problems]
    assert statuses[0] == S.UNTRUSTED and S.WEAK_ALGORITHM in statuses
    assert len(result.signers[0].weaknesses) == 2  # SHA-1 and RSA-1024


def test_an_rsa1024_signer_is_valid_for_archives_and_reported_weak(
    pki: TestPki, rsa1024: tuple[Path, Path], anchors: tuple[x509.Certificate, ...]
) -> None:
    message = _sign(*rsa1024, ["-certfile", pki.intermediate])
    at = _an_hour_after(rsa1024[0])
    assert _open(message, anchors, at).signature == S.WEAK_ALGORITHM
    archive = _open(message, anchors, at, allow_weak=True)
    assert archive.signature == S.VALID and "weak-algorithm" in archive.warnings


def test_the_cli_flag_and_the_config_option_accept_weak_algorithms(
    pki: TestPki, rsa1024: tuple[Path, Path], tmp_path: Path
) -> None:
    message = tmp_path / "small.eml"
    message.write_bytes(_sign(*rsa1024, ["-certfile", pki.intermediate]))
    at = _an_hour_after(rsa1024[0]).isoformat()
    base: list[str | Path] = ["open", message, "--anchor", pki.root, "--at", at, "--json"]
    strict = _cli(*base)
    assert strict.returncode == 1 and json.loads(strict.stdout)["signature"] == "weak-algorithm"
    flag = _cli(*base, "--allow-weak")
    assert flag.returncode == 0, flag.stderr
    report = json.loads(flag.stdout)
    assert report["signature"] == "valid" and "weak-algorithm" in report["warnings"]
    config = tmp_path / "config.toml"
    config.write_text(
        f'[identity]\ntrust_anchors = ["{pki.root}"]\nsystem_anchors = false\n'
        "allow_weak_algorithms = true\n"
    )
    configured = _cli("open", message, "--at", at, "--json", "--config", config)
    assert configured.returncode == 0, configured.stderr
    assert json.loads(configured.stdout)["signature"] == "valid"


# --- 3. a version-1 root as trust anchor --------------------------------------------------------


def test_a_version_1_root_configured_as_anchor_is_a_name_and_a_key(tmp_path: Path) -> None:
    root_key, csr, root = tmp_path / "v1.key.pem", tmp_path / "v1.csr", tmp_path / "v1.pem"
    run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", root_key,
         "-subj", "/CN=Version 1 Root", "-out", csr])  # fmt: skip
    # openssl x509 -req without extensions writes a version-1 certificate.
    run(["openssl", "x509", "-req", "-in", csr, "-signkey", root_key, "-days", "3650",
         "-out", root])  # fmt: skip
    assert load_cert(root).version == x509.Version.v1
    cert, key = _user(tmp_path, "old", root, root_key)
    result = _open(_sign(cert, key), [load_cert(root)], _an_hour_after(cert))
    assert result.signature == S.VALID, result.layers
    # Not configured as an anchor, the same root is still no CA for anyone.
    assert _open(_sign(cert, key, ["-certfile", root]), [], _an_hour_after(cert)).signature == (
        S.UNTRUSTED
    )


# --- 4. the signer's certificate is not in the message ------------------------------------------


def test_a_self_signed_signer_left_out_of_the_message_is_found_among_the_anchors(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "self.pem", tmp_path / "self.key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-subj", "/CN=Self", "-days", "30", "-out", cert,
         "-addext", "subjectAltName=email:old@example.org",
         "-addext", "extendedKeyUsage=emailProtection"])  # fmt: skip
    message = _sign(cert, key, ["-nocerts"])
    at = _an_hour_after(cert)
    assert _open(message, [load_cert(cert)], at).signature == S.VALID
    untrusted = _open(message, [], at)
    assert untrusted.signature == S.UNTRUSTED
    assert "not in the message" in (untrusted.signers[0].reason or "")


def test_gpgsm_include_certs_0_opens_with_the_certificates_given(
    pki: TestPki, tmp_path: Path, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    data = mime_message()
    outer, entity = split_message(data)
    with GpgsmHome(tmp_path / "gnupg", pki, ["alice"]) as home:
        (tmp_path / "content").write_bytes(entity)
        proc = home._gpgsm(
            ["-u", "alice@example.org", "--include-certs", "0", "--detach-sign",
             "-o", tmp_path / "sig.der", tmp_path / "content"],
            passphrase=True,
        )  # fmt: skip
        assert b"SIG_CREATED" in proc.stdout
    signed = multipart_signed_entity(entity, (tmp_path / "sig.der").read_bytes(), "sha-256")
    message = _with_outer(outer, signed)
    alone = _open(message, anchors, now)
    assert alone.signature == S.UNTRUSTED
    given = [load_cert(pki.cert("alice")), load_cert(pki.intermediate)]
    assert _open(message, anchors, now, extra_certificates=given).signature == S.VALID
    path = tmp_path / "gpgsm.eml"
    path.write_bytes(message)
    proc2 = _cli("open", path, "--anchor", pki.root, "--certfile", pki.chain("alice"))
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr


def test_gpgsm_armoured_output_opens_as_it_was_saved(
    pki: TestPki, tmp_path: Path, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # `gpgsm --armor` labels its PEM "SIGNED MESSAGE" and "ENCRYPTED MESSAGE", not PKCS7/CMS:
    # such a file was "header line is not a field".
    content = b"Content-Type: text/plain\r\n\r\nArmoured by gpgsm.\r\n"
    (tmp_path / "content").write_bytes(content)
    with GpgsmHome(tmp_path / "gnupg", pki, ["alice"]) as home:
        home.import_certificate("bob")
        sign: list[str | Path] = ["-u", "alice@example.org", "--armor", "--sign", "-o"]
        home._gpgsm([*sign, tmp_path / "signed.pem", tmp_path / "content"], passphrase=True)
        seal: list[str | Path] = ["-r", "bob@example.org", "--armor", "--encrypt", "-o"]
        home._gpgsm([*seal, tmp_path / "sealed.pem", tmp_path / "content"])
    signed, sealed = ((tmp_path / name).read_bytes() for name in ("signed.pem", "sealed.pem"))
    assert signed.startswith(b"-----BEGIN SIGNED MESSAGE-----")
    assert sealed.startswith(b"-----BEGIN ENCRYPTED MESSAGE-----")
    opened = _open(signed, anchors, now)
    assert [p[0] for p in opened.signers[0].problems] == [S.EMAIL_MISMATCH]  # no From in a file
    assert b"Armoured by gpgsm." in opened.content
    decrypted = open_message(sealed, identities=[load_identity(pki, "bob")], at=now)
    assert (decrypted.decryption, decrypted.error) == (Decryption.OK, None)
    assert b"Armoured by gpgsm." in decrypted.content


def test_rfc9216_nocerts_example_verifies_with_the_certificate_given(now: dt.datetime) -> None:
    # Public vector: Alice (RSA) and Carlos (Ed25519) sign without certificates. With Carlos's
    # certificate given (and trusted directly), his signature is sound; Alice's cannot be found.
    carlos = keyfiles.load_certificates(VECTORS / "lamps-carlos.crt")
    raw = (VECTORS / "signedByAliceAndCarlosNoCerts.pem").read_bytes()
    result = _open(raw, carlos, now, extra_certificates=carlos)
    signers = {s.address: s for s in result.signers}
    assert [p[0] for p in signers["carlos@smime.example"].problems] == [S.EMAIL_MISMATCH]
    assert "no From" in (signers["carlos@smime.example"].reason or "")
    (alice,) = [s for s in result.signers if s.certificate is None]
    assert alice.status == S.UNTRUSTED and "not in the message" in (alice.reason or "")


# --- 5 and 6. mbox separators and bare CMS files -------------------------------------------------


def test_a_message_saved_from_an_mbox_opens(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    signed = _sign(pki.cert("alice"), pki.key("alice"), ["-certfile", pki.intermediate],
                   mime_message())  # fmt: skip
    saved = b"From alice@example.org Wed Nov 25 09:00:00 2026\n" + signed
    result = _open(saved, anchors, now)
    assert result.signature == S.VALID and result.signer == "alice@example.org"
    assert result.error is None


@pytest.mark.parametrize(
    ("outform", "extra"),
    [("DER", []), ("PEM", []), ("DER", ["-stream"])],
    ids=["der", "pem", "ber"],
)
def test_a_bare_signed_cms_file_opens(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    outform: str,
    extra: list[str],
) -> None:
    p7m = _sign(pki.cert("alice"), pki.key("alice"),
                ["-certfile", pki.intermediate, "-nodetach", "-outform", outform, *extra],
                mime_message())  # fmt: skip
    result = _open(p7m, anchors, now)
    assert result.signature == S.VALID, result.layers
    assert [layer.type for layer in result.layers] == ["signed-data"]
    assert b"this is a test" in result.content


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["-EncryptedData_encrypt", "-aes128", "-secretkey", "00" * 16], "encrypted_data"),
        (["-digest_create"], "digested_data"),
        (["-data_create"], "data"),
    ],
)
def test_a_bare_cms_file_of_another_type_says_what_it_is(
    now: dt.datetime, command: list[str], kind: str
) -> None:
    # RFC 4134's examples 3.1, 6.0, 7.1: read as a header section they gave "header line is
    # not a field: '0W\x06\t*...'".
    der = openssl_cms([*command, "-outform", "DER"], b"Hello\r\n")
    result = open_message(der, at=now)
    assert result.decryption == Decryption.UNSUPPORTED and not result.ok
    assert result.error == f"decryption: unsupported CMS content type {kind!r}"


def test_a_bare_enveloped_pem_file_decrypts(pki: TestPki, now: dt.datetime) -> None:
    p7m = openssl_cms(["-encrypt", "-outform", "PEM", "-recip", pki.cert("bob")], mime_message())
    assert p7m.startswith(b"-----BEGIN CMS-----")
    result = open_message(p7m, identities=[load_identity(pki, "bob")], at=now)
    assert result.decryption == Decryption.OK
    assert b"this is a test" in result.content


def test_rfc9216_ed25519_example_opens_as_a_bare_pem_file(now: dt.datetime) -> None:
    carlos = keyfiles.load_certificates(VECTORS / "lamps-carlos.crt")
    result = _open((VECTORS / "signedByCarlosEd25519.pem").read_bytes(), carlos, now)
    (signer,) = result.signers
    assert signer.address == "carlos@smime.example"
    assert [p[0] for p in signer.problems] == [S.EMAIL_MISMATCH]  # a bare file has no From
    assert result.content == b"This is some sample content."


def test_rfc9216_rsa_pss_example_is_sound_and_lacks_only_its_anchor() -> None:
    # Public vector: Alice signs with RSASSA-PSS (SHA-256, MGF1 with SHA-256, a 32-byte salt)
    # and sends her certificate; RFC 9216's RSA CA is not among the vectors. Judged in 2020,
    # inside the certificate's 2019-2052 validity.
    at = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    raw = (VECTORS / "signedByAliceRSAPSS.pem").read_bytes()
    (signer,) = _open(raw, (), at).signers
    assert (signer.address, signer.signature_algorithm) == ("alice@smime.example", "rsa-pss")
    assert [p[0] for p in signer.problems] == [S.UNTRUSTED, S.EMAIL_MISMATCH]
    der = bytearray(base64.b64decode(b"".join(raw.splitlines()[1:-1])))
    der[-1] ^= 1  # the signature value is the last field
    (broken,) = _open(bytes(der), (), at).signers
    assert broken.status == S.INVALID


def test_open_with_a_config_uses_its_identity_and_anchors(pki: TestPki, tmp_path: Path) -> None:
    signed = _sign(pki.cert("alice"), pki.key("alice"), ["-certfile", pki.intermediate],
                   mime_message())  # fmt: skip
    p7m = tmp_path / "smime.p7m"
    p7m.write_bytes(openssl_cms(["-encrypt", "-outform", "DER", "-recip", pki.cert("bob")], signed))
    config = tmp_path / "config.toml"
    config.write_text(
        f'[identity]\np12 = "{pki.p12("bob")}"\np12_password_env = "P12_PASSWORD"\n'
        f'trust_anchors = ["{pki.root}"]\nsystem_anchors = false\n'
    )
    env = minimal_env(P12_PASSWORD=PKCS12_PASSWORD, SMIME_COMPANION_CONFIG=str(config))
    proc = _cli("open", p7m, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["decryption"], report["signature"]) == ("ok", "valid")
    ignored = _cli("open", p7m, "--json", "--no-config", env=env)
    assert ignored.returncode == 1 and json.loads(ignored.stdout)["decryption"] == "no-key"


# --- 7. a bare-LF multipart/signed inside an opaque layer ----------------------------------------


def test_a_bare_lf_multipart_signed_inside_an_envelope_verifies_as_received(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # NSS signs the nested entity over its bare-LF bytes (-binary: no canonicalisation), and
    # the envelope keeps them as they are.
    lf_entity = mime_message().replace(b"\r\n", b"\n")
    signed = _sign(pki.cert("alice"), pki.key("alice"),
                   ["-certfile", pki.intermediate, "-binary"], lf_entity)  # fmt: skip
    assert b"\r\n" not in signed.split(b"\n\n", 1)[1][:200]
    enveloped = openssl_cms(["-encrypt", "-binary", "-recip", pki.cert("bob")], signed)
    result = open_message(
        enveloped, identities=[load_identity(pki, "bob")], anchors=anchors, at=now
    )
    assert [layer.type for layer in result.layers] == ["enveloped", "signed"]
    assert result.signature == S.VALID, result.layers
    # At the top level the canonical form is the only one: the same bytes are invalid there.
    assert _open(signed, anchors, now).signature == S.INVALID


# --- 8. verdict honesty ------------------------------------------------------------------------


def test_a_header_section_over_the_limit_is_malformed_never_none(now: dt.datetime) -> None:
    huge = b"X-Filler: " + b"a" * (300 * 1024) + b"\r\n" + mime_message()
    result = open_message(huge, at=now)
    assert (result.signature, result.decryption) == (S.MALFORMED, Decryption.MALFORMED)
    assert not result.ok


def test_an_outlook_p7m_attachment_in_a_plain_multipart_is_partially_encrypted(
    pki: TestPki, now: dt.datetime
) -> None:
    der = openssl_cms(["-encrypt", "-outform", "DER", "-recip", pki.cert("bob")], mime_message())
    attachment = base64.encodebytes(der)
    message = (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: see attached\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
        b"--XX\r\nContent-Type: application/octet-stream; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment + b"--XX--\r\n"
    )
    result = open_message(message, identities=[load_identity(pki, "bob")], at=now)
    assert "partially-encrypted" in result.warnings
    assert result.decryption == Decryption.NONE  # never opened nor joined to the plain part


# --- 10. PEM-armoured PKCS#12 -------------------------------------------------------------------

_P12_EXPORT_ATTEMPTS = 3


def test_a_gpgsm_armoured_pkcs12_opens_mail_and_imports(
    pki: TestPki, tmp_path: Path, now: dt.datetime
) -> None:
    armoured = tmp_path / "bob.p12.asc"
    with GpgsmHome(tmp_path / "gnupg", pki, ["bob"]) as home:
        # Once, in a full time-moved run, the file gpgsm exported did not open with the password
        # (not reproduced: 120 exports in a row, with and without the clock moved, all opened;
        # gpgsm's import has a like salt-dependent defect, see GpgsmHome.import_identity). A
        # fresh export (a fresh salt) is asked for then; every failed attempt's stderr is kept.
        failures = []
        for _attempt in range(_P12_EXPORT_ATTEMPTS):
            proc = home._gpgsm(
                ["--armor", "--export-secret-key-p12", "bob@example.org"], passphrase=True
            )
            armoured.write_bytes(proc.stdout)
            assert b"-----BEGIN PKCS12-----" in proc.stdout
            try:
                identity = keyfiles.load_pkcs12(armoured, PKCS12_PASSWORD.encode())
                break
            except KeyLoadError as exc:
                failures.append(f"{exc}; gpgsm said: {proc.stderr.decode(errors='replace')}")
        else:
            raise AssertionError("\n".join(failures))
    assert identity.certificate == load_cert(pki.cert("bob"))
    message = tmp_path / "enc.eml"
    # AES-GCM: content decrypted from CBC without a signature inside is not trusted (exit 1).
    message.write_bytes(
        openssl_cms(["-encrypt", "-aes-256-gcm", "-recip", pki.cert("bob")], mime_message())
    )
    opened = _cli("open", message, "--p12", armoured, "--p12-password-env", "P12_PASSWORD",
                  "--json")  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout)["decryption"] == "ok"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[identity]\nsystem_anchors = false\n[cache]\npath = "{tmp_path / "cache"}"\n'
        "encrypt_cache = false\n"
    )
    imported = _cli("identity", "import", armoured, "--password-env", "P12_PASSWORD",
                    "--config", config)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert b"bob@example.org" in imported.stdout


# --- 11. certificates-only messages (smime.p7c) -------------------------------------------------
#
# How a client sends its certificate (RFC 8551 section 3.7): a SignedData with certificates and
# neither a signer nor content, as `openssl crl2pkcs7 -nocrl` writes it (no eContent) and as
# NSS's `cmsutil -O` does (an empty one). It signs nothing, so it is no broken signature.

_P7C_HEADERS = (
    b"Content-Type: application/pkcs7-mime; smime-type=certs-only; name=smime.p7c\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="smime.p7c"\r\n\r\n'
)


def _p7c_part(der: bytes) -> bytes:
    return _P7C_HEADERS + base64.encodebytes(der).replace(b"\n", b"\r\n")


def _certs_only(pki: TestPki, tmp_path: Path, made_by: str) -> bytes:
    if made_by == "openssl":
        return run(["openssl", "crl2pkcs7", "-nocrl", "-certfile", pki.cert("alice"),
                    "-certfile", pki.intermediate, "-outform", "DER"])  # fmt: skip
    db = NssDb(tmp_path / "nss", pki, ["alice"])
    out = tmp_path / "certs.p7c"
    run(["cmsutil", "-O", "-d", db.db, "-r", "alice@example.org", "-o", out])
    return out.read_bytes()


def _headed(part: bytes, subject: str = "My certificate") -> bytes:
    return (
        f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode() + part


def _mixed(text: bytes, attachment: bytes) -> bytes:
    return _headed(
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        + text
        + b"\r\n--b1\r\n"
        + attachment
        + b"\r\n--b1--\r\n"
    )


@pytest.mark.parametrize("made_by", ["openssl", "nss"])
def test_a_certificates_only_message_is_neither_signed_nor_broken(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path,
    made_by: str,
) -> None:  # fmt: skip
    message = _headed(_p7c_part(_certs_only(pki, tmp_path, made_by)))
    result = _open(message, anchors, now)
    assert (result.decryption, result.signature) == (Decryption.NONE, S.NONE)
    assert [layer.type for layer in result.layers] == ["certs-only"]
    assert result.error is None and result.warnings == ()
    assert b"smime.p7c" in result.content  # shown as it came: an attachment


def test_an_attached_certificate_does_not_make_a_message_partly_signed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    p7c = _certs_only(pki, tmp_path, "openssl")
    result = _open(_mixed(b"Hi Bob, my certificate is attached.", _p7c_part(p7c)), anchors, now)
    assert result.warnings == () and result.error is None
    assert (result.decryption, result.signature) == (Decryption.NONE, S.NONE)


def test_a_signed_part_called_certs_only_still_warns(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # The label is the sender's word: a real signature under it is still a hidden signed part.
    signed = _sign(pki.cert("alice"), pki.key("alice"), ["-nodetach", "-outform", "DER"],
                   b"Content-Type: text/plain\r\n\r\nI agree to pay.\r\n")  # fmt: skip
    result = _open(_mixed(b"See attached.", _p7c_part(signed)), anchors, now)
    assert result.warnings == ("partially-signed",)


def test_a_signed_data_with_content_and_no_signer_is_still_malformed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    from asn1crypto import cms

    info = cms.ContentInfo.load(_certs_only(pki, tmp_path, "openssl"))
    info["content"]["encap_content_info"]["content"] = b"Content-Type: text/plain\r\n\r\nPay.\r\n"
    result = _open(_headed(_p7c_part(info.dump(force=True))), anchors, now)
    assert result.signature == S.MALFORMED
    assert "no SignerInfo" in (result.error or "")


# --- 12. signed receipts (RFC 2634) -------------------------------------------------------------


def test_a_signed_receipt_is_checked_and_not_unwrapped(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    # Alice asks for a receipt; Bob's client answers with `openssl cms -sign_receipt`: a SignedData
    # whose content is a Receipt (DER naming Alice's message), not a MIME entity.
    request = tmp_path / "request.eml"
    asked = ["-certfile", pki.intermediate, "-receipt_request_all",
             "-receipt_request_to", "alice@example.org"]  # fmt: skip
    request.write_bytes(_sign(pki.cert("alice"), pki.key("alice"), asked, mime_message()))
    receipt = run(["openssl", "cms", "-sign_receipt", "-in", request, "-signer", pki.cert("bob"),
                   "-inkey", pki.key("bob"), "-certfile", pki.intermediate, "-from",
                   "bob@example.org", "-to", "alice@example.org", "-subject", "Re"])  # fmt: skip
    assert b"smime-type=signed-receipt" in receipt
    result = _open(receipt, anchors, now)
    assert result.signature == S.VALID and result.signer == "bob@example.org"
    assert [layer.type for layer in result.layers] == ["signed-receipt"]
    assert result.error is None
    # The receipt's signature is still checked: a changed byte of it (the signature value ends
    # the DER: openssl adds no unsigned attributes) makes it invalid.
    outer, _, body = receipt.partition(b"\n\n")
    der = bytearray(base64.b64decode(body))
    der[-3] ^= 0x01
    tampered = outer + b"\n\n" + base64.encodebytes(bytes(der))
    assert _open(tampered, anchors, now).signature == S.INVALID


def test_a_damaged_certificates_only_part_claims_no_broken_encryption(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    # Cut in half: it cannot be read, and its label promised certificates, not a ciphertext.
    der = _certs_only(pki, tmp_path, "openssl")
    result = _open(_headed(_p7c_part(der[: len(der) // 2])), anchors, now)
    assert (result.decryption, result.signature) == (Decryption.NONE, S.NONE)
    assert [layer.type for layer in result.layers] == ["certs-only"]
    assert (result.error or "").startswith("certificates: not a valid CMS ContentInfo")
    assert "\n" not in (result.error or "")


# --- 13. signed or encrypted content without a MIME header ---------------------------------------

# PHP's openssl_pkcs7_sign / openssl_pkcs7_encrypt (the manual's own example) and `openssl smime`
# without -text sign or encrypt a bare text file: the content inside the layer has no header
# section, and RFC 2045 makes it text/plain. A signed document (an Italian `document.pdf.p7m`) is
# the same with a file inside.

PHP_TEXT = (
    b"Nighthawk,\n\nTop secret, for your eyes only!\n\n"
    b"The enemy is closing in! Meet me at the cafe at 8.30am\nto collect your forged passport!\n"
)
PHP_HEADERS = b"To: bob@example.org\nFrom: alice@example.org\nSubject: From PHP\n"


def _smime(args: Sequence[str | Path], data: bytes) -> bytes:
    return run(["openssl", "smime", *args], stdin=data)


def _php_signed(pki: TestPki, data: bytes = PHP_TEXT) -> bytes:
    """What openssl_pkcs7_sign($file, ..., $headers) sends: headers, then `openssl smime -sign`."""
    signer: list[str | Path] = ["-signer", pki.cert("alice"), "-inkey", pki.key("alice")]
    return PHP_HEADERS + _smime(["-sign", *signer, "-certfile", pki.intermediate], data)


def test_php_signed_text_without_a_header_is_valid_and_shown_whole(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    message = _php_signed(pki)
    assert b"\nNighthawk," in message  # the signed part starts with the text, no header
    result = _open(message, anchors, now)
    assert (result.signature, result.signer, result.error) == (S.VALID, "alice@example.org", None)
    assert result.content.replace(b"\r\n", b"\n") == PHP_TEXT
    assert extract_text(result.content).body.startswith("Nighthawk,")
    # What is shown is what was signed: one changed letter is invalid.
    assert _open(message.replace(b"cafe", b"cafE"), anchors, now).signature == S.INVALID


@pytest.mark.parametrize("signed_first", [False, True], ids=["encrypted", "signed-then-encrypted"])
def test_php_encrypted_text_without_a_header_decrypts(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, signed_first: bool
) -> None:
    inner = _php_signed(pki).split(b"\n", 3)[3] if signed_first else PHP_TEXT
    message = PHP_HEADERS + _smime(["-encrypt", "-aes256", pki.cert("bob")], inner)
    result = open_message(message, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)
    assert result.decryption == Decryption.OK and result.error is None, result.error
    assert result.signature == (S.VALID if signed_first else S.NONE)
    assert extract_text(result.content).body.startswith("Nighthawk,")


def test_a_signed_pdf_p7m_is_a_valid_file_not_text(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n<< /Length 4 >>\nstream\n\x00\x01\x02\x03\nendstream\n"
    signing: list[str | Path] = [
        "-certfile",
        pki.intermediate,
        "-nodetach",
        "-binary",
        "-outform",
        "DER",
    ]
    p7m = _sign(pki.cert("alice"), pki.key("alice"), signing, pdf)
    message = (
        b"From: alice@example.org\r\nSubject: the contract\r\nContent-Type: application/pkcs7-mime;"
        b' smime-type=signed-data; name="contract.pdf.p7m"\r\nContent-Transfer-Encoding: base64'
        b"\r\n\r\n" + base64.encodebytes(p7m)
    )
    result = _open(message, anchors, now)
    assert (result.signature, result.error, result.content) == (S.VALID, None, pdf)
    assert result.content_name == "contract.pdf"  # named by the .p7m around it
    extracted = extract_text(result.content, result.content_name)
    assert extracted.body == ""
    (attachment,) = extracted.attachments
    assert (attachment.filename, attachment.mime_type, attachment.size) == (
        "contract.pdf", "application/octet-stream", len(pdf)
    )  # fmt: skip
    assert result.to_json()["content_name"] == "contract.pdf"  # for `open --json` scripts
    # smime.p7m names no document: such content has no name of its own.
    generic = message.replace(b'name="contract.pdf.p7m"', b'name="smime.p7m"')
    assert _open(generic, anchors, now).content_name is None
    # The command line says what it holds and how to get it.
    saved, out = tmp_path / "contract.eml", tmp_path / "contract.pdf"
    saved.write_bytes(message)
    shown = _cli("open", "--no-config", "--anchor", pki.root, "-o", out, saved)
    assert shown.returncode == 0, shown.stderr
    assert b"content:    the file contract.pdf" in shown.stdout and out.read_bytes() == pdf


def test_a_header_section_with_a_stray_line_ends_there(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Readers end the header section at the first line that is not a field (Python's email
    # package does too): the rest is body, nothing is lost.
    content = b"Content-Type: text/plain\nThis line is no field\n\nthe body\n"
    result = _open(_php_signed(pki, content), anchors, now)
    assert (result.signature, result.error) == (S.VALID, None)
    assert extract_text(result.content).body.startswith("This line is no field")


def test_a_stray_line_in_a_received_header_section_continues_the_field_before_it(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # A field folded without its leading blank (an Enron-era References), a relay's stray
    # line: the message was "malformed" and nothing of it was shown. Mail readers show it.
    signed = _sign(pki.cert("alice"), pki.key("alice"), ["-certfile", pki.intermediate,
                   "-crlfeol"], mime_message())  # fmt: skip
    for stray in (b"References: <a@example.org>, <b.\r\nc@example.org>\r\n",
                  b"X-Relay: checked\r\nquite Delivered-To: bob@example.org\r\n"):  # fmt: skip
        result = _open(stray + signed, anchors, now)
        assert (result.signature, result.error) == (S.VALID, None)
        assert extract_text(result.content).body.startswith("Hello Bob")
    # The From a signer must hold is read as written, a stray line after it included: one
    # that adds an address leaves no single sender.
    # Exchange wrote a long diagnostic field over two lines, the second without its blank: a
    # plain message's text is read below its Content-Type, not from the stray line on.
    plain = (
        b"From: alice@example.org\r\nx-microsoft-exchange-diagnostics: 1;AM4PR01MB;6:1Y77Vd\r\n"
        b"P8FxVksOO2tmFWl+LxT0Acgv7RaCFBKFmzA31fwJabrv\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nThe minutes.\r\n--b--\r\n"
    )
    opened = _open(plain, anchors, now)
    assert extract_text(opened.content).body.strip() == "The minutes."
    sent = _open(b"From: alice@example.org\r\n" + signed, anchors, now)
    stray = _open(b"From: alice@example.org\r\nmallory@example.net\r\n" + signed, anchors, now)
    assert (sent.signature, stray.signature) == (S.VALID, S.EMAIL_MISMATCH)


def test_a_whole_message_without_a_header_section_is_still_malformed(now: dt.datetime) -> None:
    # Outside a layer, a "message" whose first line is no field was never checked as mail.
    result = _open(b"Nighthawk,\n\nTop secret\n", (), now)
    assert (result.decryption, result.signature) == (Decryption.MALFORMED, S.MALFORMED)


# --- 14. labels left out -------------------------------------------------------------------------

# RFC 1847 requires multipart/signed's protocol parameter and RFC 2045 a Content-Transfer-Encoding
# for base64; some senders, and list servers that rewrite the Content-Type, leave them out.


def _detached(pki: TestPki) -> bytes:
    return _sign(pki.cert("alice"), pki.key("alice"), ["-certfile", pki.intermediate, "-crlfeol"],
                 mime_message())  # fmt: skip


def test_a_multipart_signed_without_its_protocol_is_still_checked(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    signed = _detached(pki)
    bare = signed.replace(b'protocol="application/pkcs7-signature"; ', b"")
    assert b"protocol=" not in bare
    result = _open(bare, anchors, now)
    assert (result.signature, result.error) == (S.VALID, None)
    assert [layer.type for layer in result.layers] == ["signed"]
    assert _open(bare.replace(b"this is a test", b"this is a tesT"), anchors, now).signature == (
        S.INVALID
    )
    # A misspelt protocol is read the same way.
    misspelt = signed.replace(b'protocol="application/pkcs7-signature"', b'protocol="pkcs7"')
    assert _open(misspelt, anchors, now).signature == S.VALID
    # A PGP signature is not ours to judge, with or without the parameter.
    pgp = bare.replace(b"application/pkcs7-signature", b"application/pgp-signature")
    assert _open(pgp, anchors, now).signature == S.NONE
    declared_pgp = signed.replace(
        b'protocol="application/pkcs7-signature', b'protocol="application/pgp-signature'
    )
    assert _open(declared_pgp, anchors, now).signature == S.NONE


def test_a_signature_part_without_its_transfer_encoding_is_read_as_base64(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    signed = _detached(pki)
    assert signed.count(b"Content-Transfer-Encoding: base64\r\n") == 1  # the signature's
    result = _open(signed.replace(b"Content-Transfer-Encoding: base64\r\n", b""), anchors, now)
    assert (result.signature, result.error) == (S.VALID, None)


def test_an_encrypted_part_without_its_transfer_encoding_decrypts(
    pki: TestPki, now: dt.datetime
) -> None:
    encrypted = openssl_cms(["-encrypt", "-recip", pki.cert("bob")], mime_message())
    bare = encrypted.replace(b"Content-Transfer-Encoding: base64\n", b"")
    assert b"Content-Transfer-Encoding" not in bare
    result = open_message(bare, identities=[load_identity(pki, "bob")], at=now)
    assert (result.decryption, result.error) == (Decryption.OK, None)
    assert b"this is a test" in result.content


PEM_HEADERS = b"From: alice@example.org\r\nTo: bob@example.org\r\nMIME-Version: 1.0\r\n"


def test_pem_armour_under_a_base64_label_is_read_as_the_armour_it_is(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # Some scripts and Java programs write `-outform PEM` output into the body and still label
    # it base64, which the armour lines make corrupt.
    content = mime_message()
    pem = openssl_cms(["-encrypt", "-outform", "PEM", "-recip", pki.cert("bob")], content)
    assert pem.startswith(b"-----BEGIN CMS-----")
    encrypted = PEM_HEADERS + (
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + pem
    )
    result = open_message(encrypted, identities=[load_identity(pki, "bob")], at=now)
    assert (result.decryption, result.error, result.content) == (Decryption.OK, None, content)
    signer = [pki.cert("alice"), "-inkey", pki.key("alice"), "-certfile", pki.intermediate]
    signature = openssl_cms(["-sign", "-binary", "-outform", "PEM", "-signer", *signer], content)
    signed = PEM_HEADERS + (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        b'micalg=sha-256; boundary="b"\r\n\r\n--b\r\n' + content + b"\r\n--b\r\n"
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + signature + b"--b--\r\n"
    )
    assert (_open(signed, anchors, now).signature, _open(signed, anchors, now).error) == (
        S.VALID,
        None,
    )
    # Anything else that breaks the base64 still does.
    broken = encrypted.replace(b"-----BEGIN CMS-----", b"-----BEGIN X-----")
    result = open_message(broken, identities=[load_identity(pki, "bob")], at=now)
    assert result.decryption == Decryption.MALFORMED


# --- 15. certificates encoded loosely (BER, not DER) ----------------------------------------------

# Older CAs wrote a BOOLEAN TRUE as 01 rather than FF, wrote out default values (`critical FALSE`)
# and UTCTimes without seconds (BER allows all three, DER none). OpenSSL accepts the first two,
# cryptography refuses all three; we read them as BER says, validity to the minute. Each case is
# alice's certificate with one such change, signed again by the test intermediate (with
# cryptography: openssl would re-encode it as DER), then used by `openssl cms -sign`, which keeps
# the encoding it was given.


def _tlv(tag: int, content: bytes) -> bytes:
    return der_writer.tlv(tag, content)  # DER lengths: each case has its one defect only


def _loosely_encoded(pki: TestPki, defect: str) -> bytes:
    """Alice's certificate with ``defect``, as DER-but-not-quite, signed by the intermediate."""
    original = asn1_x509.Certificate.load(load_cert(pki.cert("alice")).public_bytes(Encoding.DER))
    tbs = original["tbs_certificate"]
    fields = {name: tbs[name].dump() for name in (
        "version", "serial_number", "signature", "issuer", "validity", "subject",
        "subject_public_key_info")}  # fmt: skip
    extensions = [extension.dump() for extension in tbs["extensions"]]
    if defect == "boolean-true-as-01":
        critical = next(i for i, e in enumerate(extensions) if b"\x01\x01\xff" in e)
        extensions[critical] = extensions[critical].replace(b"\x01\x01\xff", b"\x01\x01\x01")
    elif defect == "critical-false-written-out":
        plain = next(i for i, e in enumerate(tbs["extensions"]) if not e["critical"].native)
        extension = tbs["extensions"][plain]
        extensions[plain] = _tlv(0x30, extension["extn_id"].dump() + b"\x01\x01\x00"
                                 + extension["extn_value"].dump())  # fmt: skip
    elif defect == "teletex-latin-1-name":
        # L=Düsseldorf as a T.61 string holding Latin-1, as German CAs wrote it around 2000.
        locality = _tlv(0x30, b"\x06\x03\x55\x04\x07" + _tlv(0x14, "Düsseldorf".encode("latin-1")))
        fields["subject"] = _tlv(0x30, tbs["subject"].chosen.contents + _tlv(0x31, locality))
    else:  # utctime-without-seconds
        validity = tbs["validity"]
        not_before = validity["not_before"].chosen.dump()
        assert not_before[:2] == b"\x17\x0d"  # YYMMDDHHMMSSZ
        fields["validity"] = _tlv(
            0x30, b"\x17\x0b" + not_before[2:12] + b"Z" + validity["not_after"].dump()
        )
    body = b"".join(fields.values()) + _tlv(0xA3, _tlv(0x30, b"".join(extensions)))
    tbs_der = _tlv(0x30, body)
    ca_key = keyfiles.load_private_key(pki.directory / "intermediate.key.pem")
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    signature = ca_key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA256())
    return _tlv(
        0x30, tbs_der + original["signature_algorithm"].dump() + _tlv(0x03, b"\x00" + signature)
    )


@pytest.mark.parametrize(
    "defect",
    [
        "boolean-true-as-01",
        "critical-false-written-out",
        "utctime-without-seconds",
        "teletex-latin-1-name",
    ],
)
def test_a_signer_certificate_encoded_loosely_is_accepted_and_named(
    pki: TestPki,
    anchors: tuple[x509.Certificate, ...],
    now: dt.datetime,
    tmp_path: Path,
    defect: str,
) -> None:
    der = _loosely_encoded(pki, defect)
    with pytest.raises(ValueError):  # what used to make the signer "not in the message"
        x509.load_der_x509_certificate(der).subject  # noqa: B018 (names are read lazily)
    cert = tmp_path / "alice-loose.pem"
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der)
                     + b"-----END CERTIFICATE-----\n")  # fmt: skip
    message = _sign(cert, pki.key("alice"), ["-certfile", pki.intermediate], mime_message())
    if defect != "utctime-without-seconds":  # OpenSSL 3.0 refuses that one ("format error")
        run(["openssl", "cms", "-verify", "-CAfile", pki.root, "-out", "/dev/null"], message)
    result = _open(message, anchors, now)
    assert (result.signature, result.signer) == (S.VALID, "alice@example.org")
    assert "non-der-certificate" in result.warnings
    [signer] = result.all_signers()
    assert signer.certificate is not None
    assert signer.certificate.public_bytes(Encoding.DER) == der  # carried as it was, and reported
    said = "Teletex strings holding Latin-1" if defect == "teletex-latin-1-name" else "not DER"
    assert any(said in note for note in signer.notes)
    if defect == "teletex-latin-1-name":
        assert "L=Düsseldorf" in signer.certificate.subject.rfc4514_string()
    # What the CA signed is the certificate as sent: one changed byte of it and it is no longer
    # its issuer's.
    forged = der.replace(b"Alice", b"Alicf")
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(forged)
                     + b"-----END CERTIFICATE-----\n")  # fmt: skip
    message = _sign(cert, pki.key("alice"), ["-certfile", pki.intermediate], mime_message())
    assert _open(message, anchors, now).signature == S.UNTRUSTED


# --- 16. ">From " lines an mbox writer escaped ---------------------------------------------------

# mbox files (Thunderbird's local folders, mutt, archives imported from them) put ">" before a
# body line that begins "From ", and many readers never take it off: the signed content no longer
# matches. Verified without the escape, and shown so.

FROM_LINE = mime_message(body="Hello Bob,\r\nFrom the team, thanks.\r\n>From a quote.\r\n")


def test_a_signed_message_with_an_mbox_escaped_from_line_is_valid_as_sent(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    signed = _sign(pki.cert("alice"), pki.key("alice"), ["-certfile", pki.intermediate, "-crlfeol"],
                   FROM_LINE)  # fmt: skip
    assert _open(signed, anchors, now).signature == S.VALID  # as sent, nothing to undo
    stored = signed.replace(b"\nFrom the team", b"\n>From the team").replace(
        b"\n>From a quote", b"\n>>From a quote"
    )  # fmt: skip
    result = _open(stored, anchors, now)
    assert (result.signature, result.error) == (S.VALID, None)
    assert b"\r\nFrom the team, thanks.\r\n>From a quote.\r\n" in result.content
    # Only the escape is undone: any other change is still a broken signature.
    assert _open(stored.replace(b"thanks", b"Thanks"), anchors, now).signature == S.INVALID


# --- 17. .eml files Windows tools saved ----------------------------------------------------------


SAVED_SLIPS: dict[str, Callable[[bytes], bytes]] = {
    "byte-order-mark": lambda signed: b"\xef\xbb\xbf" + signed,
    "cr-cr-lf": lambda signed: re.sub(rb"\r?\n", b"\r\r\n", signed),  # openssl's LF ones too
    # A script that printed an empty line first; an archiver that indented the first field.
    "empty-lines-first": lambda signed: b"\r\n \r\n" + signed,
    "first-field-indented": lambda signed: b"  \t" + signed,
}


@pytest.mark.parametrize("damage", SAVED_SLIPS)
def test_a_saved_eml_with_a_bom_or_doubled_line_ends_opens(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, damage: str
) -> None:
    signed = _detached(pki)
    assert signed.startswith(b"MIME-Version: 1.0\r\n")  # the field the slips land before
    result = _open(SAVED_SLIPS[damage](signed), anchors, now)
    assert (result.signature, result.signer, result.error) == (S.VALID, "alice@example.org", None)
    assert first_field(result.headers, "mime-version") == "1.0"


def test_an_empty_line_before_text_that_is_no_field_still_means_no_header(
    now: dt.datetime,
) -> None:
    # Only blanks before a header field are a slip; before prose they mean what they say.
    saved = b"\r\nDear Bob: no header here.\r\n"
    result = open_message(saved, at=now)
    assert (result.decryption, result.signature, result.content) == (
        Decryption.NONE, SignatureStatus.NONE, saved,
    )  # fmt: skip
    assert extract_text(result.content).body.strip() == "Dear Bob: no header here."


def test_doubled_line_ends_inside_the_signed_part_alone_verify_as_openssl_reads_them(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    # wolfSSL's smime-test-canon.p7s: some lines of the signed part end CR CR LF, the rest of
    # the message does not. OpenSSL's canonical form strips every CR before a line's LF.
    signed = _detached(pki)
    start = signed.index(b"this is a test")
    damaged = signed[:start] + signed[start:].replace(b"\r\n", b"\r\r\n", 1)
    assert damaged.count(b"\r\r\n") == 1
    (tmp_path / "damaged.eml").write_bytes(damaged)
    run(["openssl", "cms", "-verify", "-CAfile", pki.root, "-in", tmp_path / "damaged.eml",
         "-out", "/dev/null"])  # fmt: skip
    result = _open(damaged, anchors, now)
    assert (result.signature, result.error) == (S.VALID, None)
    assert b"\r\r\n" not in result.content  # what is shown is what verified
    altered = damaged.replace(b"this is a test", b"this is a tesT")
    assert _open(altered, anchors, now).signature == S.INVALID


def test_only_encodings_are_tolerated_not_bytes_after_a_certificate(pki: TestPki) -> None:
    # Bytes after it change its fingerprint and nothing it says: still refused, as cryptography
    # and OpenSSL refuse them, so one certificate cannot pass for another.
    der = load_cert(pki.cert("alice")).public_bytes(Encoding.DER)
    with pytest.raises(ValueError):
        load_certificate(der + b"\x00\x00")
    with pytest.raises(ValueError):
        load_certificate(_loosely_encoded(pki, "boolean-true-as-01") + b"\x00\x00")


def test_a_footer_a_list_server_added_as_a_third_part_is_not_shown_as_signed(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime
) -> None:
    # ezmlm and Sympa add their footer as one more part of the multipart, inside multipart/signed.
    signed = _detached(pki)
    boundary = re.search(rb'boundary="([^"]+)"', signed)
    assert boundary is not None
    close = b"--" + boundary.group(1) + b"--"
    footer = (
        b"--" + boundary.group(1) + b"\r\nContent-Type: text/plain\r\n\r\nTo unsubscribe...\r\n"
    )
    listed = signed.replace(close, footer + close)
    result = _open(listed, anchors, now)
    assert (result.signature, result.error) == (S.VALID, None)
    assert "partially-signed" in result.warnings
    assert b"this is a test" in result.content and b"unsubscribe" not in result.content


def test_a_signature_standing_alone_says_its_signed_content_is_missing(
    pki: TestPki, anchors: tuple[x509.Certificate, ...], now: dt.datetime, tmp_path: Path
) -> None:
    # Bouncy Castle's brokenEnv.message: a message whose whole body is a detached signature
    # (a multipart/signed whose first part was lost). It was passed as ordinary content with
    # no signature, exit 0; labelled pkcs7-mime it already said what is wrong.
    signed = _detached(pki)
    start = signed.index(b"Content-Type: application/pkcs7-signature")
    part = signed[start : signed.index(b"\r\n------", start)]
    result = _open(_headed(part, "Signed"), anchors, now)
    assert result.signature == S.MALFORMED and not result.ok
    assert result.error is not None and "signed content was not given" in result.error
    # A certificate sent under that label is still a certificate, and an attached signature
    # file beside a text is still an attachment.
    certs = _p7c_part(_certs_only(pki, tmp_path, "openssl")).replace(
        b"application/pkcs7-mime; smime-type=certs-only", b"application/pkcs7-signature"
    )
    assert b"application/pkcs7-signature" in certs
    as_certs = _open(_headed(certs), anchors, now)
    assert (as_certs.signature, as_certs.error) == (S.NONE, None)
    attached = _open(_mixed(b"The signature file you asked for.", part), anchors, now)
    assert (attached.signature, attached.error, attached.warnings) == (S.NONE, None, ())
