"""Driving the other S/MIME implementations from tests: GnuPG's gpgsm and NSS's cmsutil.

Each peer lives in a throwaway directory (a GNUPGHOME, an NSS database) filled from the test PKI, so
nothing touches ``~/.gnupg`` or ``~/.netscape``. The peers only produce or consume CMS; the S/MIME
MIME framing is added here the way real clients do it (Thunderbird on NSS, KMail/Kleopatra on
gpgsm): the message's own headers stay outside, the MIME entity (``Content-*`` headers and body, in
canonical CRLF form) is what gets signed or encrypted.

Quirks measured on this machine (gpgsm 2.2.40, NSS 3.87) and worked around or surfaced here:

* gpgsm cannot read the PKCS#12 files the test PKI writes (PBES2 with an hmacWithSHA256 PRF):
  ``encryptedData error at "pkcs5PBES2-params"``. We re-encode the same key and certificates as a
  legacy PKCS#12 (pbeWithSHAAnd3-KeyTripleDES-CBC, SHA-1 MAC), password unchanged.
* gpgsm 2.2.40 fails to decrypt about one 3DES key bag in fifty (deterministic per file, so
  per salt; openssl reads the same files): ``decryption failed; trying charset ...`` then
  ``data error at "shrouded_key_bag.decrypted-text"``. We re-encode with a fresh salt and retry.
* gpgsm 2.2.40 crashes importing any EC private key from PKCS#12 (``signal Segmentation fault
  caught``), whoever wrote the file; so it cannot sign as carol/dave/frank. Ed25519 keys are
  rejected too. Both raise :class:`PeerCannot`.
* gpgsm 2.2 refuses EC recipients: it demands keyEncipherment, which ECDH certificates do not have
  (``can't encrypt to 'carol@example.org': Wrong key usage``) -> :class:`PeerCannot`.
* gpgsm has no ``--passphrase`` option (``--passphrase test`` is silently taken as an abbreviation
  of ``--passphrase-fd``!); the passphrase goes in on fd 0, so data always goes in as a file.
* gpgsm cannot sign and encrypt in one pass (``this command has not yet been implemented``);
  clients build the two layers as MIME, as :meth:`GpgsmHome.sign_and_encrypt` does.
* cmsutil exits 0 even when a signature does not verify; the verdict is only in the ``-h``
  header lines (``signer0.status=DigestMismatch``), which it writes into the same output as the
  content, so status and content are read in two runs.
* NSS 3.87 cannot envelope for EC recipients (``SEC_ERROR_INVALID_ALGORITHM``) and cannot store
  Ed25519 certificates at all (``SEC_ERROR_ADDING_CERT``) -> :class:`PeerCannot`.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import os
import re
import secrets
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_companion.core.model import OpenResult
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import PKCS12_PASSWORD, TestPki

# Content-* headers belong to the MIME entity that is signed/encrypted; every other header of a
# message stays on the outside (RFC 8551 section 3.1; no header protection, like most clients).
_ENTITY_HEADER = re.compile(rb"^content-", re.IGNORECASE)

MICALG = {"sha1": "sha-1", "sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}


class PeerCannot(Exception):
    """A peer tool could not produce or read something (its own limitation, with its error text)."""


@dataclass(frozen=True)
class PeerVerdict:
    """What a peer said about a signature.

    ``good`` is True when every signature matches its content (gpgsm ``GOODSIG`` or an
    expired-key variant, cmsutil ``GoodSignature``); ``valid`` when, in addition, the peer
    accepted the certificate chain (gpgsm ``GOODSIG`` + ``VALIDSIG`` + ``TRUST_FULLY``; cmsutil
    checks the chain before the signature, so its ``GoodSignature`` already means both).
    ``statuses`` keeps the peer's raw status words; ``content`` the signed content when the peer
    returned it (opaque signatures).
    """

    good: bool
    valid: bool
    statuses: tuple[str, ...]
    content: bytes | None = None


# --- MIME framing ----------------------------------------------------------------------------


def canonical(data: bytes) -> bytes:
    """``data`` with every line ending as CRLF (the canonical form S/MIME signs)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def split_message(message: bytes) -> tuple[list[bytes], bytes]:
    """Split a message into its outer header lines and its MIME entity.

    Returns ``(outer, entity)``: ``outer`` holds the unfolded-as-written header fields that are not
    ``Content-*`` (each without its line end), ``entity`` the ``Content-*`` headers, a blank line
    and the body, in CRLF form. A message without Content-Type gets ``text/plain``.
    """
    head, sep, body = canonical(message).partition(b"\r\n\r\n")
    if not sep:
        head, body = head, b""
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line  # keep folded fields whole
        elif line:
            fields.append(line)
    outer = [f for f in fields if not _ENTITY_HEADER.match(f)]
    inner = [f for f in fields if _ENTITY_HEADER.match(f)]
    if not any(f.lower().startswith(b"content-type:") for f in inner):
        inner.insert(0, b"Content-Type: text/plain; charset=us-ascii")
    return outer, b"\r\n".join(inner) + b"\r\n\r\n" + body


def _base64_lines(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"\r\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + b"\r\n"


def _with_outer(outer: Sequence[bytes], entity: bytes) -> bytes:
    headers = [h for h in outer if not h.lower().startswith(b"mime-version:")]
    return b"\r\n".join([*headers, b"MIME-Version: 1.0"]) + b"\r\n" + entity


def multipart_signed_entity(
    content: bytes,
    signature_der: bytes,
    micalg: str,
    signature_type: str = "application/pkcs7-signature",
) -> bytes:
    """A multipart/signed entity (no outer headers) around ``content`` and its detached CMS.

    ``content`` must be exactly the bytes that were signed; it is placed between the boundaries
    unchanged. ``micalg`` is the RFC 8551 name (``sha-256``).
    """
    boundary = b"------------ms" + secrets.token_hex(12).encode()
    return (
        b'Content-Type: multipart/signed; protocol="'
        + signature_type.encode()
        + b'"; micalg='
        + micalg.encode()
        + b';\r\n boundary="'
        + boundary
        + b'"\r\n\r\nThis is a cryptographically signed message in MIME format.\r\n\r\n--'
        + boundary
        + b"\r\n"
        + content
        + b"\r\n--"
        + boundary
        + b"\r\nContent-Type: "
        + signature_type.encode()
        + b'; name="smime.p7s"\r\nContent-Transfer-Encoding: base64\r\n'
        + b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
        + b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
        + _base64_lines(signature_der)
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def pkcs7_mime_entity(
    cms_der: bytes, smime_type: str, content_type: str = "application/pkcs7-mime"
) -> bytes:
    """An ``application/pkcs7-mime`` entity (base64) holding ``cms_der``.

    ``smime_type`` is ``enveloped-data``, ``authEnveloped-data`` or ``signed-data``.
    """
    return (
        f'Content-Type: {content_type}; smime-type={smime_type}; name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        "Content-Description: S/MIME Encrypted Message\r\n\r\n"
    ).encode() + _base64_lines(cms_der)


def extract_cms(message: bytes) -> tuple[bytes, bytes | None]:
    """The CMS of an S/MIME message (or of raw DER) and, if detached, the signed content.

    Returns ``(cms_der, content)``: ``content`` is the exact first part of a multipart/signed
    (split on the raw bytes, never re-serialised), else None. Raises ValueError when the message
    is neither.
    """
    if message[:1] == b"\x30":
        return message, None
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    if msg.get_content_type() == "multipart/signed":
        boundary = msg.get_param("boundary")
        if not isinstance(boundary, str):
            raise ValueError("multipart/signed without a boundary")
        delimiter = re.compile(
            rb"(?:\r?\n)--" + re.escape(boundary.encode()) + rb"(?:--)?[ \t]*\r?\n"
        )
        first = re.search(
            rb"(?:^|\r?\n)--" + re.escape(boundary.encode()) + rb"[ \t]*\r?\n", message
        )
        if first is None:
            raise ValueError("multipart/signed without its first boundary")
        rest = message[first.end() :]
        parts = delimiter.split(rest)
        content, signature_part = parts[0], parts[1]
        sig = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(signature_part)
        payload = sig.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise ValueError("multipart/signed without a signature part")
        return payload, content
    payload = msg.get_payload(decode=True)
    if not isinstance(payload, bytes) or payload[:1] != b"\x30":
        raise ValueError(f"not an S/MIME message: {msg.get_content_type()}")
    return payload, None


# --- running the tools ---------------------------------------------------------------------


def _run(
    argv: Sequence[str | Path],
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in argv)} failed ({proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def _stderr_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The tool's error lines, minus gpgsm's chatter about the offline checks we turned off."""
    lines = [
        line
        for line in proc.stderr.decode(errors="replace").splitlines()
        if "not checked due to" not in line and line.strip()
    ]
    return " | ".join(lines)


class _Workdir:
    """Numbered scratch files inside a peer's directory (the tools read and write files)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "work"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def file(self, name: str, data: bytes | None = None) -> Path:
        self._n += 1
        path = self.directory / f"{self._n:04d}-{name}"
        if data is not None:
            path.write_bytes(data)
        return path


# --- gpgsm ---------------------------------------------------------------------------------


# What gpgsm prints when it cannot decrypt a key bag it should (see GpgsmHome.import_identity).
_P12_SALT_BUG = b"decryption failed; trying charset"
_P12_ATTEMPTS = 5


def _legacy_p12(pki: TestPki, user: str) -> bytes:
    """``user``'s PKCS#12 re-encoded with 3DES + SHA-1 MAC, the newest scheme gpgsm 2.2 reads."""
    bundle = pkcs12.load_pkcs12(pki.p12(user).read_bytes(), PKCS12_PASSWORD.encode())
    if bundle.key is None or bundle.cert is None:
        raise AssertionError(f"{pki.p12(user)} holds no key with its certificate")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(PKCS12_PASSWORD.encode())
    )
    return pkcs12.serialize_key_and_certificates(
        user.encode(),
        bundle.key,  # type: ignore[arg-type]
        bundle.cert.certificate,
        [c.certificate for c in bundle.additional_certs],
        encryption,
    )


class GpgsmHome:
    """A throwaway GNUPGHOME for gpgsm holding the test PKI's CAs and the users asked for.

    The root is trusted through ``trustlist.txt``; CRL checks and dirmngr are off (no network).
    Users' keys are imported from their PKCS#12 on first use (or up front via ``users``);
    recipients' certificates likewise. Use as a context manager, or call :meth:`close`, to stop
    the gpg-agent this home starts.
    """

    def __init__(self, directory: Path, pki: TestPki, users: Iterable[str] = ()) -> None:
        self.directory = directory
        self.pki = pki
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # gpg warns (and may refuse) on a group-readable home
        self.env = {**os.environ, "GNUPGHOME": str(directory), "LC_ALL": "C"}
        # loopback: the passphrase comes from our stdin, never a pinentry window. A low
        # s2k-count: the agent re-protects imported keys with it, and the calibrated default
        # (~100 ms per unlock, worse on a busy machine) made every gpgsm signature take 0.5 s.
        (directory / "gpg-agent.conf").write_text("allow-loopback-pinentry\ns2k-count 65536\n")
        (directory / "gpgsm.conf").write_text(
            "disable-crl-checks\ndisable-dirmngr\ndisable-policy-checks\n"
        )
        root = x509.load_pem_x509_certificate(pki.root.read_bytes())
        fingerprint = root.fingerprint(hashes.SHA1()).hex().upper()
        pretty = ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))
        # "S" = trusted for S/MIME; "relax" tolerates the root's missing policy oddities.
        (directory / "trustlist.txt").write_text(f"{pretty} S relax\n")
        self._work = _Workdir(directory)
        self._keys: set[str] = set()
        self._certs: set[str] = set()
        try:
            self._gpgsm(["--import", pki.root, pki.intermediate])
            for user in users:
                self.import_identity(user)
        except BaseException:
            self.close()  # an import may already have started gpg-agent
            raise

    def __enter__(self) -> GpgsmHome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the gpg-agent (and any other daemon) started for this home."""
        _run(["gpgconf", "--kill", "all"], env=self.env, check=False)

    def _gpgsm(
        self, args: Sequence[str | Path], passphrase: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        argv: list[str | Path] = ["gpgsm", "--batch", "--status-fd", "1"]
        if passphrase:
            argv += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
        stdin = (PKCS12_PASSWORD + "\n").encode() if passphrase else b""
        return _run([*argv, *args], env=self.env, stdin=stdin, check=check)

    def import_identity(self, user: str) -> None:
        """Import ``user``'s key and certificate. Raises PeerCannot when gpgsm refuses the key."""
        if user in self._keys:
            return
        for _attempt in range(_P12_ATTEMPTS):
            p12 = self._work.file(f"{user}.p12", _legacy_p12(self.pki, user))
            proc = self._gpgsm(["--import", p12], passphrase=True, check=False)
            # gpgsm may exit 0 having imported only the certificates: insist on the key.
            if proc.returncode == 0 and b"secret keys imported: 1" in proc.stderr:
                break
            if _P12_SALT_BUG not in proc.stderr:
                break
            # gpgsm 2.2.40 fails to decrypt about 2% of 3DES key bags, deterministically for a
            # given file (openssl reads them fine): a fresh encoding (new salt) goes through.
        else:
            raise PeerCannot(
                f"gpgsm cannot import {user}'s PKCS#12 key ({_P12_ATTEMPTS} encodings): "
                f"{_stderr_line(proc)}"
            )
        if proc.returncode != 0 or b"secret keys imported: 1" not in proc.stderr:
            raise PeerCannot(
                f"gpgsm cannot import {user}'s PKCS#12 key from {p12}: {_stderr_line(proc)}"
            )
        self._keys.add(user)
        self._certs.add(user)

    def import_certificate(self, user: str) -> None:
        """Import ``user``'s certificate (for encrypting to them or checking their signature)."""
        if user not in self._certs:
            self._gpgsm(["--import", self.pki.cert(user)])
            self._certs.add(user)

    def sign_cms(
        self, content: bytes, user: str, detached: bool = True, digest: str = "sha256"
    ) -> bytes:
        """gpgsm's SignedData (DER, BER-encoded as gpgsm writes it) over ``content``."""
        self.import_identity(user)
        infile = self._work.file("content", content)
        outfile = self._work.file("signed.der")
        mode = "--detach-sign" if detached else "--sign"
        proc = self._gpgsm(
            ["-u", self.pki.email(user), "--digest-algo", digest.upper(), mode]
            + ["-o", outfile, infile],
            passphrase=True,
            check=False,
        )
        if proc.returncode != 0 or b"SIG_CREATED" not in proc.stdout:
            raise PeerCannot(f"gpgsm cannot sign as {user}: {_stderr_line(proc)}")
        return outfile.read_bytes()

    def encrypt_cms(self, content: bytes, recipients: Sequence[str], cipher: str = "") -> bytes:
        """gpgsm's EnvelopedData of ``content`` for ``recipients`` (user names).

        ``cipher`` is a gpgsm ``--cipher-algo`` name (``AES128``, ``AES256``, ``3DES``); empty
        means gpgsm's default (AES-128-CBC in 2.2). Raises PeerCannot when gpgsm refuses a
        recipient.
        """
        for user in recipients:
            self.import_certificate(user)
        infile = self._work.file("content", content)
        outfile = self._work.file("enveloped.der")
        args: list[str | Path] = []
        for user in recipients:
            args += ["-r", self.pki.email(user)]
        if cipher:
            args += ["--cipher-algo", cipher]
        proc = self._gpgsm([*args, "--encrypt", "-o", outfile, infile], check=False)
        if proc.returncode != 0 or b"INV_RECP" in proc.stdout:
            raise PeerCannot(f"gpgsm cannot encrypt to {list(recipients)}: {_stderr_line(proc)}")
        return outfile.read_bytes()

    def sign(self, data: bytes, user: str, detached: bool = True, digest: str = "sha256") -> bytes:
        """An S/MIME message: ``data`` (a full message) signed by ``user``.

        Detached gives multipart/signed with ``micalg``; opaque gives application/pkcs7-mime
        ``smime-type=signed-data``. The outer headers of ``data`` stay outside the signature.
        """
        outer, entity = split_message(data)
        if detached:
            sig = self.sign_cms(entity, user, detached=True, digest=digest)
            return _with_outer(outer, multipart_signed_entity(entity, sig, MICALG[digest]))
        cms = self.sign_cms(entity, user, detached=False, digest=digest)
        return _with_outer(outer, pkcs7_mime_entity(cms, "signed-data"))

    def encrypt(self, data: bytes, recipients: Sequence[str], cipher: str = "") -> bytes:
        """An S/MIME message: the MIME entity of ``data`` enveloped for ``recipients``."""
        outer, entity = split_message(data)
        cms = self.encrypt_cms(entity, recipients, cipher)
        return _with_outer(outer, pkcs7_mime_entity(cms, "enveloped-data"))

    def sign_and_encrypt(
        self, data: bytes, user: str, recipients: Sequence[str], cipher: str = ""
    ) -> bytes:
        """An S/MIME message signed (detached, multipart/signed) by ``user`` and then enveloped
        for ``recipients``, as gpgsm-based clients build it (gpgsm cannot do both in one pass)."""
        outer, entity = split_message(data)
        sig = self.sign_cms(entity, user, detached=True)
        signed = multipart_signed_entity(entity, sig, MICALG["sha256"])
        cms = self.encrypt_cms(signed, recipients, cipher)
        return _with_outer(outer, pkcs7_mime_entity(cms, "enveloped-data"))

    def decrypt(self, message: bytes) -> bytes:
        """The plaintext gpgsm gets from an enveloped S/MIME message (or raw CMS DER).

        Raises AssertionError with gpgsm's error when it cannot decrypt.
        """
        cms, _ = extract_cms(message)
        infile = self._work.file("enveloped.der", cms)
        outfile = self._work.file("plain")
        proc = self._gpgsm(["--decrypt", "-o", outfile, infile], passphrase=True, check=False)
        # Judge by status, as GPGME clients do: gpgsm 2.2 exits 2 after logging an error for
        # each RecipientInfo that is not ours, even when it then decrypts with the one that is.
        if b"DECRYPTION_OKAY" not in proc.stdout or b"DECRYPTION_FAILED" in proc.stdout:
            raise AssertionError(f"gpgsm cannot decrypt: {_stderr_line(proc)}")
        return outfile.read_bytes()

    def verify(self, signed: bytes, detached_content: bytes | None = None) -> PeerVerdict:
        """gpgsm's verdict on a signed S/MIME message (or raw CMS with ``detached_content``)."""
        cms, content = extract_cms(signed)
        content = detached_content if detached_content is not None else content
        sigfile = self._work.file("signed.der", cms)
        args: list[str | Path] = ["--verify", sigfile]
        outfile: Path | None = None
        if content is not None:
            args.append(self._work.file("content", content))
        else:
            outfile = self._work.file("content-out")
            args = ["-o", outfile, *args]
        proc = self._gpgsm(args, check=False)
        statuses = tuple(
            line.split()[1]
            for line in proc.stdout.decode(errors="replace").splitlines()
            if line.startswith("[GNUPG:] ") and len(line.split()) > 1
        )
        # EXPSIG/EXPKEYSIG/REVKEYSIG replace GOODSIG for a sound signature by a key that has
        # expired or been revoked; only GOODSIG + VALIDSIG + full trust is a clean pass.
        sound = {"GOODSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"}
        good = bool(sound & set(statuses)) and not {"BADSIG", "ERRSIG"} & set(statuses)
        valid = (
            good
            and "GOODSIG" in statuses
            and "VALIDSIG" in statuses
            and bool({"TRUST_FULLY", "TRUST_ULTIMATE"} & set(statuses))
        )
        out = outfile.read_bytes() if outfile is not None and outfile.exists() else None
        return PeerVerdict(good=good, valid=valid, statuses=statuses, content=out)


# --- NSS -----------------------------------------------------------------------------------


class NssDb:
    """A throwaway NSS database (empty password) with the test PKI's CAs and chosen users.

    The root is trusted for email (``C,C,C``); the intermediate is stored without trust flags so
    NSS builds the chain through it. Users' keys come from their PKCS#12 (``pk12util -W``) and
    their nickname is the user name (the PKCS#12 friendly name); recipients' certificates are
    added on first use.
    """

    def __init__(self, directory: Path, pki: TestPki, users: Iterable[str] = ()) -> None:
        self.directory = directory
        self.pki = pki
        directory.mkdir(parents=True, exist_ok=True)
        self.db = f"sql:{directory}"
        self._work = _Workdir(directory)
        self._known: set[str] = set()
        _run(["certutil", "-N", "-d", self.db, "--empty-password"])
        _run(["certutil", "-A", "-d", self.db, "-n", "test-root", "-t", "C,C,C", "-i", pki.root])
        _run(
            ["certutil", "-A", "-d", self.db, "-n", "test-intermediate", "-t", ",,"]
            + ["-i", pki.intermediate]
        )
        for user in users:
            self.import_identity(user)

    def import_identity(self, user: str) -> None:
        """Import ``user``'s key and certificate from PKCS#12. Raises PeerCannot if NSS refuses."""
        if user in self._known:
            return
        argv: list[str | Path] = ["pk12util", "-i", self.pki.p12(user), "-d", self.db]
        argv += ["-W", PKCS12_PASSWORD, "-K", ""]  # -K: the (empty) database password
        proc = _run(argv, check=False)
        if proc.returncode != 0:
            raise PeerCannot(f"pk12util cannot import {user}: {_stderr_line(proc)}")
        self._known.add(user)

    def import_certificate(self, user: str) -> None:
        """Add ``user``'s certificate (no trust flags), e.g. to encrypt to them."""
        if user in self._known:
            return
        proc = _run(
            ["certutil", "-A", "-d", self.db, "-n", user, "-t", ",,", "-i", self.pki.cert(user)],
            check=False,
        )
        if proc.returncode != 0:
            raise PeerCannot(f"certutil cannot store {user}'s certificate: {_stderr_line(proc)}")
        self._known.add(user)

    def sign_cms(
        self, content: bytes, user: str, detached: bool = True, digest: str = "sha256"
    ) -> bytes:
        """cmsutil's SignedData over ``content``, with signing time and SMIMECapabilities
        (``-G -P``, as Thunderbird sends them) and NSS's default encryption-key preference."""
        self.import_identity(user)
        infile = self._work.file("content", content)
        outfile = self._work.file("signed.der")
        args: list[str | Path] = ["cmsutil", "-S", "-d", self.db, "-N", user, "-G", "-P"]
        args += ["-H", digest.upper(), "-i", infile, "-o", outfile]
        if detached:
            args.append("-T")
        proc = _run(args, check=False)
        if proc.returncode != 0:
            raise PeerCannot(f"cmsutil cannot sign as {user}: {_stderr_line(proc)}")
        return outfile.read_bytes()

    def encrypt_cms(self, content: bytes, recipients: Sequence[str]) -> bytes:
        """cmsutil's EnvelopedData of ``content`` for ``recipients`` (found by address).

        NSS picks the cipher itself (AES-128-CBC for recipients it has no capabilities for).
        Raises PeerCannot when NSS cannot make a RecipientInfo (e.g. EC recipients in NSS 3.87).
        """
        for user in recipients:
            self.import_certificate(user)
        infile = self._work.file("content", content)
        outfile = self._work.file("enveloped.der")
        emails = ",".join(self.pki.email(u) for u in recipients)
        proc = _run(
            ["cmsutil", "-E", "-d", self.db, "-r", emails, "-i", infile, "-o", outfile],
            check=False,
        )
        if proc.returncode != 0:
            raise PeerCannot(f"cmsutil cannot encrypt to {list(recipients)}: {_stderr_line(proc)}")
        return outfile.read_bytes()

    def sign(self, data: bytes, user: str, detached: bool = True, digest: str = "sha256") -> bytes:
        """An S/MIME message: ``data`` (a full message) signed by ``user`` through cmsutil."""
        outer, entity = split_message(data)
        if detached:
            sig = self.sign_cms(entity, user, detached=True, digest=digest)
            return _with_outer(outer, multipart_signed_entity(entity, sig, MICALG[digest]))
        cms = self.sign_cms(entity, user, detached=False, digest=digest)
        return _with_outer(outer, pkcs7_mime_entity(cms, "signed-data"))

    def encrypt(self, data: bytes, recipients: Sequence[str]) -> bytes:
        """An S/MIME message: the MIME entity of ``data`` enveloped for ``recipients``."""
        outer, entity = split_message(data)
        cms = self.encrypt_cms(entity, recipients)
        return _with_outer(outer, pkcs7_mime_entity(cms, "enveloped-data"))

    def sign_and_encrypt(self, data: bytes, user: str, recipients: Sequence[str]) -> bytes:
        """Signed (multipart/signed) by ``user``, then enveloped for ``recipients``, as
        Thunderbird does."""
        outer, entity = split_message(data)
        sig = self.sign_cms(entity, user, detached=True)
        signed = multipart_signed_entity(entity, sig, MICALG["sha256"])
        cms = self.encrypt_cms(signed, recipients)
        return _with_outer(outer, pkcs7_mime_entity(cms, "enveloped-data"))

    def decode(self, message: bytes) -> bytes:
        """The content cmsutil gets from an S/MIME message or raw CMS (decrypting with the keys
        in the database, unwrapping nested CMS). Raises AssertionError when cmsutil fails."""
        cms, _ = extract_cms(message)
        infile = self._work.file("message.der", cms)
        outfile = self._work.file("decoded")
        proc = _run(["cmsutil", "-D", "-d", self.db, "-i", infile, "-o", outfile], check=False)
        if proc.returncode != 0:
            raise AssertionError(f"cmsutil cannot decode: {_stderr_line(proc)}")
        return outfile.read_bytes()

    def decrypt(self, message: bytes) -> bytes:
        """Same as :meth:`decode` (cmsutil decrypts while decoding)."""
        return self.decode(message)

    def verify(self, signed: bytes, detached_content: bytes | None = None) -> PeerVerdict:
        """cmsutil's verdict on a signed S/MIME message (or raw CMS with ``detached_content``).

        ``statuses`` are cmsutil's ``signerN.status`` words (``GoodSignature``,
        ``DigestMismatch``, ``SigningCertNotTrusted``, ...), read from its ``-h`` report.
        """
        cms, content = extract_cms(signed)
        content = detached_content if detached_content is not None else content
        infile = self._work.file("signed.der", cms)
        args: list[str | Path] = ["cmsutil", "-D", "-d", self.db, "-i", infile]
        if content is not None:
            args += ["-c", self._work.file("content", content)]
        report = _run([*args, "-h", "1", "-n"], check=False)
        statuses = tuple(
            re.findall(r"signer\d+\.status=(\w+)", report.stdout.decode(errors="replace"))
        )
        good = bool(statuses) and all(s == "GoodSignature" for s in statuses)
        out: bytes | None = None
        if content is None and report.returncode == 0:
            outfile = self._work.file("content-out")
            _run([*args, "-o", outfile], check=False)
            out = outfile.read_bytes() if outfile.exists() else None
        return PeerVerdict(good=good, valid=good, statuses=statuses, content=out)


# --- what the interop tests expect of open_message -------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The verdict ``open_message`` must reach on a generated message.

    ``cipher`` and ``key_transport`` are checked on the outermost encrypted layer when set;
    ``layers`` is the layer types outermost first; ``warnings`` must all be present and
    ``absent_warnings`` must not be.
    """

    decryption: Decryption = Decryption.NONE
    signature: SignatureStatus = SignatureStatus.NONE
    signer: str | None = None
    layers: tuple[str, ...] = ()
    cipher: str | None = None
    key_transport: str | None = None
    warnings: tuple[str, ...] = ()
    absent_warnings: tuple[str, ...] = ()


def check_opened(result: OpenResult, expect: Expect, marker: str, sender: str) -> None:
    """Assert that ``result`` matches ``expect``, that the innermost content holds ``marker``
    (a line of the original body) and that the effective From is ``sender``."""
    summary = (
        f"decryption={result.decryption} signature={result.signature} signer={result.signer} "
        f"layers={[layer.type for layer in result.layers]} cipher={result.content_cipher} "
        f"warnings={result.warnings} error={result.error} "
        f"reasons={[s.reason for s in result.signers]}"
    )
    assert result.decryption == expect.decryption, summary
    assert result.signature == expect.signature, summary
    assert result.signer == expect.signer, summary
    assert tuple(layer.type for layer in result.layers) == expect.layers, summary
    assert result.content_cipher == expect.cipher, summary
    if expect.key_transport is not None:
        encrypted = [layer for layer in result.layers if layer.decryption is not None]
        assert encrypted and encrypted[0].key_transport == expect.key_transport, summary
    for warning in expect.warnings:
        assert warning in result.warnings, summary
    for warning in expect.absent_warnings:
        assert warning not in result.warnings, summary
    assert marker.encode() in result.content, f"marker missing from content: {result.content!r}"
    assert result.header("From") == sender, summary


def interop_params(cases: Mapping[str, object], tool_limits: Mapping[str, str]) -> list[object]:
    """pytest parameters for interop cases, one per case id. A case a tool cannot produce is a
    strict xfail that must raise :class:`PeerCannot` with the measured reason, so it starts
    failing (and the marker must go) the day the tool learns the format."""
    params: list[object] = []
    for name, case in cases.items():
        marks = []
        if name in tool_limits:
            marks.append(
                pytest.mark.xfail(raises=PeerCannot, strict=True, reason=tool_limits[name])
            )
        params.append(pytest.param(case, id=name, marks=marks))
    return params
