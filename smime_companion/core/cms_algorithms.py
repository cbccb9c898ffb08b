"""Algorithm tables and parameter codecs for CMS enveloping (RFC 5652, 5753, 5084, 3217, 4055).

asn1crypto names the common OIDs but leaves several things untyped: the ECDH key-agreement scheme
OIDs (RFC 5753 / SEC 1), the key-wrap AlgorithmIdentifier carried in their parameters, and the
AES-GCM parameters (RFC 5084). This module holds those OID tables, small ASN.1 classes to decode
and encode them, and the key-derivation and key-unwrap steps that cryptography does not offer in
the exact CMS form. It is shared by ``core.decrypt`` and (later) ``core.seal``, so it speaks in
plain values: names, sizes, ``cryptography`` hash objects and bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from asn1crypto import core
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
)

from smime_companion.core.ber_walker import der_elements

# --- content-encryption algorithms ------------------------------------------------------------


@dataclass(frozen=True)
class ContentCipher:
    """A content-encryption algorithm: our name for it, its OID, mode and key size in bytes."""

    name: str
    oid: str
    mode: Literal["cbc", "gcm", "ccm", "chacha20-poly1305"]
    key_size: int
    weak: bool = False  # a legacy cipher we still read but flag (64-bit block, old design)
    # RC2's effective key bits (RFC 2268), read from the message's parameters; 0 for the others.
    effective_bits: int = 0

    @property
    def aead(self) -> bool:
        """True for the authenticated ciphers, which belong in AuthEnvelopedData only."""
        return self.mode != "cbc"

    @property
    def block_size(self) -> int:
        """The cipher's block size in bytes (the CBC IV size); 0 for the AEADs."""
        if self.aead:
            return 0
        return 16 if self.name.startswith(("aes", "camellia", "seed")) else 8


CONTENT_CIPHERS: dict[str, ContentCipher] = {
    c.oid: c
    for c in (
        ContentCipher("aes-128-cbc", "2.16.840.1.101.3.4.1.2", "cbc", 16),
        ContentCipher("aes-192-cbc", "2.16.840.1.101.3.4.1.22", "cbc", 24),
        ContentCipher("aes-256-cbc", "2.16.840.1.101.3.4.1.42", "cbc", 32),
        ContentCipher("aes-128-gcm", "2.16.840.1.101.3.4.1.6", "gcm", 16),
        ContentCipher("aes-192-gcm", "2.16.840.1.101.3.4.1.26", "gcm", 24),
        ContentCipher("aes-256-gcm", "2.16.840.1.101.3.4.1.46", "gcm", 32),
        # RFC 5084 section 3.1: AES-CCM in AuthEnvelopedData (few clients write it).
        ContentCipher("aes-128-ccm", "2.16.840.1.101.3.4.1.7", "ccm", 16),
        ContentCipher("aes-192-ccm", "2.16.840.1.101.3.4.1.27", "ccm", 24),
        ContentCipher("aes-256-ccm", "2.16.840.1.101.3.4.1.47", "ccm", 32),
        ContentCipher("3des-cbc", "1.2.840.113549.3.7", "cbc", 24, weak=True),
        # Old archives: single DES (56-bit key) and RC2, whose key size and name come from its
        # parameters (rc2_cipher); both are opened and flagged weak.
        ContentCipher("des-cbc", "1.3.14.3.2.7", "cbc", 8, weak=True),
        ContentCipher("rc2-cbc", "1.2.840.113549.3.2", "cbc", 16, weak=True, effective_bits=128),
        # RFC 8103: AEAD_CHACHA20_POLY1305 in AuthEnvelopedData, parameters the 12-byte nonce.
        ContentCipher("chacha20-poly1305", "1.2.840.113549.1.9.16.3.18", "chacha20-poly1305", 32),
        # National ciphers some clients offer (gpgsm, OpenSSL): Camellia (RFC 3657, Japan) and
        # SEED (RFC 4010, Korea), 128-bit blocks, parameters the IV as for AES.
        ContentCipher("camellia-128-cbc", "1.2.392.200011.61.1.1.1.2", "cbc", 16),
        ContentCipher("camellia-192-cbc", "1.2.392.200011.61.1.1.1.3", "cbc", 24),
        ContentCipher("camellia-256-cbc", "1.2.392.200011.61.1.1.1.4", "cbc", 32),
        ContentCipher("seed-cbc", "1.2.410.200004.1.4", "cbc", 16),
    )
}

RC2_CBC_OID = "1.2.840.113549.3.2"
# RFC 8018 appendix B.2.3 / RFC 3370 section 5.2: rc2ParameterVersion -> effective key bits.
_RC2_VERSIONS = {160: 40, 120: 64, 58: 128}


def rc2_cipher(parameters: bytes) -> tuple[ContentCipher, bytes]:
    """The RC2 variant and IV the DER ``parameters`` of an rc2-cbc AlgorithmIdentifier name.

    RC2-CBCParameter is ``SEQUENCE { rc2ParameterVersion INTEGER OPTIONAL, iv OCTET STRING }``
    (versions 160, 120 and 58 mean 40, 64 and 128 effective bits; 256 and up the number itself;
    absent, 32 bits as RFC 2268 says); the oldest senders wrote the IV alone. The key is as long
    as the effective bits ask (5 bytes for RC2-40), which is what the sender's key transport
    carries. Raises ``ValueError`` for parameters of another shape.
    """
    [(tag, _, value)] = der_elements(parameters)
    if tag == 0x04:
        version, iv = None, value
    elif tag == 0x30:
        fields = der_elements(value)
        if len(fields) == 1 and fields[0][0] == 0x04:
            version, iv = None, fields[0][2]
        elif len(fields) == 2 and (fields[0][0], fields[1][0]) == (0x02, 0x04):
            version, iv = int.from_bytes(fields[0][2], "big", signed=True), fields[1][2]
        else:
            raise ValueError("RC2 parameters are not a version and an IV")
    else:
        raise ValueError("RC2 parameters are not a version and an IV")
    if version is None:
        bits = 32
    elif version in _RC2_VERSIONS:
        bits = _RC2_VERSIONS[version]
    elif 256 <= version <= 1024:
        bits = version
    else:
        raise ValueError(f"RC2 parameter version {version} names no key size")
    cipher = ContentCipher(
        f"rc2-{bits}-cbc",
        RC2_CBC_OID,
        "cbc",
        max(1, (bits + 7) // 8),
        weak=True,
        effective_bits=bits,
    )
    return cipher, iv


# OIDs we recognise only to name them in an "unsupported" message.
KNOWN_UNSUPPORTED_OIDS: dict[str, str] = {
    "2.16.840.1.101.3.4.1.7": "aes-128-ccm",
    "2.16.840.1.101.3.4.1.27": "aes-192-ccm",
    "2.16.840.1.101.3.4.1.47": "aes-256-ccm",
    "1.2.840.113549.1.9.16.3.14": "rsa-kem",
    "1.2.410.200046.1.1.2": "aria-128-cbc",  # RFC 5794; cryptography has no ARIA
    "1.2.410.200046.1.1.7": "aria-192-cbc",
    "1.2.410.200046.1.1.12": "aria-256-cbc",
    "1.3.133.16.840.63.0.16": "ecmqv-sha1kdf",
    "1.3.132.1.15.0": "ecmqv-sha224kdf",
    "1.3.132.1.15.1": "ecmqv-sha256kdf",
    "1.3.132.1.15.2": "ecmqv-sha384kdf",
    "1.3.132.1.15.3": "ecmqv-sha512kdf",
}


def describe_oid(oid: str) -> str:
    """``oid`` followed by our name for it when we know one, for one-line messages."""
    name = KNOWN_UNSUPPORTED_OIDS.get(oid)
    if name is None and oid in CONTENT_CIPHERS:
        name = CONTENT_CIPHERS[oid].name
    return f"{oid} ({name})" if name else oid


# --- key-wrap algorithms ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyWrap:
    """A key-wrap algorithm: name, OID, key-encryption-key size in bytes and the wrap family."""

    name: str
    oid: str
    kek_size: int
    kind: Literal["aes", "aes-pad", "3des"]


KEY_WRAPS: dict[str, KeyWrap] = {
    w.oid: w
    for w in (
        KeyWrap("aes128-wrap", "2.16.840.1.101.3.4.1.5", 16, "aes"),
        KeyWrap("aes192-wrap", "2.16.840.1.101.3.4.1.25", 24, "aes"),
        KeyWrap("aes256-wrap", "2.16.840.1.101.3.4.1.45", 32, "aes"),
        KeyWrap("aes128-wrap-pad", "2.16.840.1.101.3.4.1.8", 16, "aes-pad"),
        KeyWrap("aes192-wrap-pad", "2.16.840.1.101.3.4.1.28", 24, "aes-pad"),
        KeyWrap("aes256-wrap-pad", "2.16.840.1.101.3.4.1.48", 32, "aes-pad"),
        # RFC 3217; OpenSSL picks it for ECDH recipients when the content cipher is 3DES.
        KeyWrap("3des-wrap", "1.2.840.113549.1.9.16.3.6", 24, "3des"),
    )
}

# RFC 3217 section 3.1: the fixed IV of the second CBC pass of the Triple-DES key wrap.
_3DES_WRAP_IV = bytes.fromhex("4adda22c79e82105")


def unwrap_key(wrap: KeyWrap, kek: bytes, wrapped: bytes) -> bytes:
    """The key that ``wrapped`` carries under ``kek``.

    Raises :class:`InvalidUnwrap` when the integrity check of the wrap fails (wrong KEK or altered
    input) and ``ValueError`` when ``wrapped`` has an impossible length.
    """
    if len(kek) != wrap.kek_size:
        raise ValueError(f"{wrap.name} needs a {wrap.kek_size}-byte key, got {len(kek)}")
    if wrap.kind == "aes":
        return aes_key_unwrap(kek, wrapped)
    if wrap.kind == "aes-pad":
        return aes_key_unwrap_with_padding(kek, wrapped)
    return _unwrap_3des(kek, wrapped)


def _unwrap_3des(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 3217 section 3.2: two CBC passes around a byte reversal, then a SHA-1 checksum."""
    if len(wrapped) != 40:
        raise ValueError(f"a Triple-DES wrapped key has 40 bytes, not {len(wrapped)}")
    temp3 = _3des_cbc_decrypt(kek, _3DES_WRAP_IV, wrapped)
    temp2 = temp3[::-1]
    iv, temp1 = temp2[:8], temp2[8:]
    cek_icv = _3des_cbc_decrypt(kek, iv, temp1)
    cek, icv = cek_icv[:24], cek_icv[24:]
    if not hmac.compare_digest(hashlib.sha1(cek).digest()[:8], icv):
        raise InvalidUnwrap()
    return cek


def _3des_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(TripleDES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


# --- ECDH key agreement (RFC 5753) --------------------------------------------------------------


@dataclass(frozen=True)
class EcdhScheme:
    """An ECDH key-agreement scheme: the X9.63 KDF hash and whether it is the cofactor variant."""

    oid: str
    hash_name: str  # "sha1", "sha224", "sha256", "sha384", "sha512"
    cofactor: bool


ECDH_SCHEMES: dict[str, EcdhScheme] = {
    s.oid: s
    for s in (
        EcdhScheme("1.3.133.16.840.63.0.2", "sha1", False),  # dhSinglePass-stdDH-sha1kdf
        EcdhScheme("1.3.132.1.11.0", "sha224", False),  # dhSinglePass-stdDH-sha224kdf
        EcdhScheme("1.3.132.1.11.1", "sha256", False),
        EcdhScheme("1.3.132.1.11.2", "sha384", False),
        EcdhScheme("1.3.132.1.11.3", "sha512", False),
        EcdhScheme("1.3.133.16.840.63.0.3", "sha1", True),  # dhSinglePass-cofactorDH-sha1kdf
        EcdhScheme("1.3.132.1.14.0", "sha224", True),
        EcdhScheme("1.3.132.1.14.1", "sha256", True),
        EcdhScheme("1.3.132.1.14.2", "sha384", True),
        EcdhScheme("1.3.132.1.14.3", "sha512", True),
    )
}


@dataclass(frozen=True)
class Curve:
    """A named curve for ECDH: cryptography's name, ours (in key-transport names such as
    "ecdh-p256-sha256"), its OID in ECParameters, and the X9.63 KDF hash seal pairs with it
    (RFC 5753 section 8's pairing of strength; the same for Brainpool in BSI TR-03116)."""

    name: str
    short: str
    oid: str
    kdf_hash: str


# The NIST curves, and the Brainpool curves (RFC 5639) that German public-sector and some
# European CAs issue S/MIME certificates on. Each has cofactor 1, so cofactor DH is plain DH.
CURVES: dict[str, Curve] = {
    c.name: c
    for c in (
        Curve("secp256r1", "p256", "1.2.840.10045.3.1.7", "sha256"),
        Curve("secp384r1", "p384", "1.3.132.0.34", "sha384"),
        Curve("secp521r1", "p521", "1.3.132.0.35", "sha512"),
        Curve("brainpoolP256r1", "bp256", "1.3.36.3.3.2.8.1.1.7", "sha256"),
        Curve("brainpoolP384r1", "bp384", "1.3.36.3.3.2.8.1.1.11", "sha384"),
        Curve("brainpoolP512r1", "bp512", "1.3.36.3.3.2.8.1.1.13", "sha512"),
    )
}
CURVE_NAMES: dict[str, str] = {c.name: c.short for c in CURVES.values()}

# RFC 8418 section 2.2: key agreement with X25519 or X448 and HKDF (the X9.63 schemes of
# ECDH_SCHEMES may be used with them too). OID -> the HKDF hash.
HKDF_SCHEMES: dict[str, str] = {
    "1.2.840.113549.1.9.16.3.19": "sha256",  # dhSinglePass-stdDH-hkdf-sha256-scheme
    "1.2.840.113549.1.9.16.3.20": "sha384",
    "1.2.840.113549.1.9.16.3.21": "sha512",
}

# RFC 8410 key OIDs of the originator's ephemeral key in X25519 / X448 key agreement.
X_CURVES: dict[str, str] = {
    "1.3.101.110": "x25519",
    "1.3.101.111": "x448",
}

# Named-curve OIDs as they appear in an originator key's ECParameters.
CURVE_OIDS: dict[str, str] = {c.oid: c.name for c in CURVES.values()}

HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),
    "sha224": hashes.SHA224(),
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


class AnyAlgorithmIdentifier(core.Sequence):
    """An AlgorithmIdentifier whose parameters are kept as they came (for OIDs asn1crypto lacks)."""

    _fields = [
        ("algorithm", core.ObjectIdentifier),
        ("parameters", core.Any, {"optional": True}),
    ]


class EccCmsSharedInfo(core.Sequence):
    """ECC-CMS-SharedInfo, RFC 5753 section 7.2: the X9.63 KDF's SharedInfo input."""

    _fields = [
        ("key_info", AnyAlgorithmIdentifier),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


class GcmParameters(core.Sequence):
    """GCMParameters, RFC 5084 section 3.2: the nonce and the tag (ICV) length, default 12.
    CCMParameters (section 3.1) have the same form."""

    _fields = [
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


def decode_key_wrap_algorithm(parameters: core.Asn1Value) -> AnyAlgorithmIdentifier:
    """The key-wrap AlgorithmIdentifier held in an ECDH scheme's parameters.

    Raises ``ValueError`` when the parameters are absent or are not an AlgorithmIdentifier.
    """
    if isinstance(parameters, core.Void):
        raise ValueError("the key-agreement algorithm has no key-wrap algorithm parameter")
    wrap = AnyAlgorithmIdentifier.load(parameters.dump(), strict=True)
    # Force the parse now, so a broken structure fails here and not at first use.
    _ = wrap["algorithm"].dotted, wrap["parameters"]
    return wrap


def ecc_cms_shared_info(wrap_algorithm: AnyAlgorithmIdentifier, ukm: bytes | None) -> bytes:
    """DER of the ECC-CMS-SharedInfo for a KEK wrapped with ``wrap_algorithm``.

    keyInfo is the key-wrap AlgorithmIdentifier as the message carries it, entityUInfo the
    user keying material when present, suppPubInfo the KEK length in bits as 4 big-endian bytes.
    Raises ``KeyError`` for a key-wrap OID that is not in :data:`KEY_WRAPS`.
    """
    wrap = KEY_WRAPS[wrap_algorithm["algorithm"].dotted]
    # Re-encode the AlgorithmIdentifier in DER: a BER message must still give the sender's KEK.
    key_info = AnyAlgorithmIdentifier.load(wrap_algorithm.dump(force=True))
    fields: dict[str, object] = {
        "key_info": key_info,
        "supp_pub_info": (wrap.kek_size * 8).to_bytes(4, "big"),
    }
    if ukm is not None:
        fields["entity_u_info"] = ukm
    return bytes(EccCmsSharedInfo(fields).dump())


def x963_kdf(hash_name: str, shared_secret: bytes, length: int, shared_info: bytes) -> bytes:
    """ANSI X9.63 KDF of ``shared_secret`` (as RFC 5753 uses it): ``length`` bytes of key."""
    kdf = X963KDF(algorithm=HASHES[hash_name], length=length, sharedinfo=shared_info)
    return kdf.derive(shared_secret)


def hkdf(
    hash_name: str, shared_secret: bytes, length: int, info: bytes, salt: bytes | None
) -> bytes:
    """RFC 5869 HKDF of ``shared_secret`` (as RFC 8418 uses it): ``length`` bytes of key, the
    DER ECC-CMS-SharedInfo as ``info``."""
    return HKDF(algorithm=HASHES[hash_name], length=length, salt=salt, info=info).derive(
        shared_secret
    )
