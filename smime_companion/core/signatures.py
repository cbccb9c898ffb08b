"""One signature checked with one public key: the algorithms S/MIME mail and its certificates use.

The same tables and the same check serve a CMS signer (:mod:`smime_companion.core.verify`), a
certificate's signature by its issuer (:mod:`smime_companion.core.chain`), and OCSP responses and
CRLs (:mod:`smime_companion.core.revocation`). Certificates are checked here rather than with
cryptography's ``verify_directly_issued_by``: since cryptography 49 that refuses SHA-1 and MD5
signatures outright, and nearly every S/MIME certificate issued before about 2016 is signed with
one. Whether such a hash is acceptable is a policy decided by the caller (``verify`` reports it as
``weak-algorithm`` unless weak algorithms are allowed), never a reason to call a signature bad.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from smime_companion.core.ber_walker import der_elements

# Digest algorithms by OID: our name and a factory for the hash object.
DIGESTS: dict[str, tuple[str, Callable[[], hashes.HashAlgorithm]]] = {
    "2.16.840.1.101.3.4.2.1": ("sha256", hashes.SHA256),
    "2.16.840.1.101.3.4.2.2": ("sha384", hashes.SHA384),
    "2.16.840.1.101.3.4.2.3": ("sha512", hashes.SHA512),
    "2.16.840.1.101.3.4.2.4": ("sha224", hashes.SHA224),
    "2.16.840.1.101.3.4.2.8": ("sha3-256", hashes.SHA3_256),
    "2.16.840.1.101.3.4.2.9": ("sha3-384", hashes.SHA3_384),
    "2.16.840.1.101.3.4.2.10": ("sha3-512", hashes.SHA3_512),
    # RFC 8419: Ed448 signers digest the content with SHAKE256 and a 512-bit output.
    "2.16.840.1.101.3.4.2.12": ("shake256", lambda: hashes.SHAKE256(64)),
    "1.3.14.3.2.26": ("sha1", hashes.SHA1),
    "1.2.840.113549.2.5": ("md5", hashes.MD5),
}
HASH_FACTORIES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    name: factory for name, factory in DIGESTS.values()
}

# Signature algorithms by OID: the scheme and the hash the OID fixes (None: the hash comes from
# elsewhere, the SignerInfo's digestAlgorithm or the RSASSA-PSS parameters).
SIGNATURE_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "1.2.840.113549.1.1.1": ("rsa-pkcs1v15", None),  # rsaEncryption, the usual CMS choice
    "1.2.840.113549.1.1.4": ("rsa-pkcs1v15", "md5"),
    "1.2.840.113549.1.1.5": ("rsa-pkcs1v15", "sha1"),
    "1.3.14.3.2.29": ("rsa-pkcs1v15", "sha1"),  # the old OIW sha1WithRSASignature
    "1.2.840.113549.1.1.14": ("rsa-pkcs1v15", "sha224"),
    "1.2.840.113549.1.1.11": ("rsa-pkcs1v15", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa-pkcs1v15", "sha384"),
    "1.2.840.113549.1.1.13": ("rsa-pkcs1v15", "sha512"),
    "1.2.840.113549.1.1.10": ("rsa-pss", None),  # the hash comes from RSASSA-PSS-params
    "1.2.840.10045.2.1": ("ecdsa", None),  # id-ecPublicKey: hash from digestAlgorithm
    "1.2.840.10045.4.1": ("ecdsa", "sha1"),
    "1.2.840.10045.4.3.1": ("ecdsa", "sha224"),
    "1.2.840.10045.4.3.2": ("ecdsa", "sha256"),
    "1.2.840.10045.4.3.3": ("ecdsa", "sha384"),
    "1.2.840.10045.4.3.4": ("ecdsa", "sha512"),
    "1.2.840.10040.4.1": ("dsa", None),  # id-dsa as a CMS signatureAlgorithm: digestAlgorithm
    "1.2.840.10040.4.3": ("dsa", "sha1"),
    "2.16.840.1.101.3.4.3.1": ("dsa", "sha224"),
    "2.16.840.1.101.3.4.3.2": ("dsa", "sha256"),
    "1.3.101.112": ("ed25519", None),  # pure EdDSA: no separate hash (RFC 8419)
    "1.3.101.113": ("ed448", None),
}
_MGF1 = "1.2.840.113549.1.1.8"


def digest_named_by(oid: str) -> tuple[str, Callable[[], hashes.HashAlgorithm]] | None:
    """The hash a SignerInfo's digestAlgorithm ``oid`` names, or None when unknown.

    Some signers put a signature OID that fixes its hash there (sha256WithRSAEncryption where
    SHA-256 belongs, RFC 5652 asks for the digest's own OID). OpenSSL 3 reads it as that hash and
    so do we: which hash is meant is unambiguous, and the signature still has to verify.
    """
    digest = DIGESTS.get(oid)
    if digest is None and (fixed := SIGNATURE_ALGORITHMS.get(oid, ("", None))[1]) is not None:
        return fixed, HASH_FACTORIES[fixed]
    return digest


class SignatureAlgorithmError(ValueError):
    """An algorithm identifier that cannot be used: ``malformed`` tells a broken encoding (or
    missing parameters) from an algorithm we do not implement."""

    def __init__(self, reason: str, *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.malformed = malformed


class KeyMismatch(Exception):
    """The signature algorithm does not fit the type of the key given to check it."""


@dataclass(frozen=True)
class SignatureAlgorithm:
    """How to check a signature: ``scheme`` (``rsa-pkcs1v15``, ``rsa-pss``, ``ecdsa``, ``dsa``,
    ``ed25519``, ``ed448``), the hash inside it (None for pure EdDSA) and, for RSASSA-PSS, the
    padding its parameters describe."""

    scheme: str
    hash_name: str | None
    pss: padding.PSS | None = None


def signature_algorithm(
    oid: str, parameters: Any = None, digest_name: str | None = None
) -> SignatureAlgorithm:
    """The algorithm an AlgorithmIdentifier names: ``oid``, its asn1crypto ``parameters`` (only
    read for RSASSA-PSS) and, for OIDs that fix no hash, the separate ``digest_name``.

    Raises :class:`SignatureAlgorithmError` for an unknown OID, an unsupported or missing hash,
    or unusable RSASSA-PSS parameters.
    """
    known = SIGNATURE_ALGORITHMS.get(oid)
    if known is None:
        raise SignatureAlgorithmError(f"signature algorithm {oid} is not supported")
    scheme, fixed_hash = known
    if scheme == "rsa-pss":
        hash_name, pss = _pss_parameters(parameters)
        return SignatureAlgorithm(scheme, hash_name, pss)
    if scheme in ("ed25519", "ed448"):
        return SignatureAlgorithm(scheme, None)
    hashed_with = fixed_hash or digest_name
    if hashed_with is None or hashed_with not in HASH_FACTORIES or hashed_with == "shake256":
        raise SignatureAlgorithmError(f"signature hash {hashed_with} is not supported")
    return SignatureAlgorithm(scheme, hashed_with)


def _pss_parameters(params: Any) -> tuple[str, padding.PSS]:
    """The hash and padding of RSASSA-PSS-params (RFC 4055 section 3.1; absent fields default)."""
    if params is None or isinstance(params, core.Void | core.Null):
        raise SignatureAlgorithmError("RSASSA-PSS signature without parameters", malformed=True)
    if not isinstance(params, algos.RSASSAPSSParams):
        params = algos.RSASSAPSSParams.load(params.dump())
    try:
        hash_oid = params["hash_algorithm"]["algorithm"].dotted
        mgf = params["mask_gen_algorithm"]
        salt_length = params["salt_length"].native
        mgf_oid = mgf["algorithm"].dotted
        mgf_hash_oid = mgf["parameters"]["algorithm"].dotted if mgf_oid == _MGF1 else None
        trailer = params["trailer_field"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise SignatureAlgorithmError(f"RSASSA-PSS parameters: {exc}", malformed=True) from None
    if mgf_oid != _MGF1:
        raise SignatureAlgorithmError(f"RSASSA-PSS mask generation {mgf_oid}")
    if trailer not in (1, "trailer_field_bc"):
        raise SignatureAlgorithmError("RSASSA-PSS trailer field other than 1")
    names = [DIGESTS[oid][0] if oid in DIGESTS else None for oid in (hash_oid, mgf_hash_oid)]
    if None in names or "shake256" in names:
        raise SignatureAlgorithmError("RSASSA-PSS with an unsupported hash")
    hash_name, mgf_name = str(names[0]), str(names[1])
    mgf1 = padding.MGF1(HASH_FACTORIES[mgf_name]())
    return hash_name, padding.PSS(mgf=mgf1, salt_length=salt_length)


# FIPS 186-4's largest DSA key. OpenSSL checks keys up to 10,000 bits, whose verification costs
# about ten times more: a message full of them would multiply the cost of every check the path
# search makes (see core.chain.MESSAGE_SIGNATURE_CHECKS). RSA is capped by OpenSSL (16,384 bits).
MAX_DSA_BITS = 3072


def signature_verifies(
    key: CertificatePublicKeyTypes, signature: bytes, data: bytes, algorithm: SignatureAlgorithm
) -> bool:
    """True when ``signature`` over ``data`` verifies with ``key``; False when it does not.

    Raises :class:`KeyMismatch` when the scheme does not fit the key type, and
    ``UnsupportedAlgorithm`` or ``ValueError`` when the backend cannot check it at all.
    """
    scheme, hash_name = algorithm.scheme, algorithm.hash_name
    try:
        if scheme in ("rsa-pkcs1v15", "rsa-pss") and isinstance(key, rsa.RSAPublicKey):
            pad = algorithm.pss if algorithm.pss is not None else padding.PKCS1v15()
            key.verify(signature, data, pad, HASH_FACTORIES[str(hash_name)]())
        elif scheme == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(HASH_FACTORIES[str(hash_name)]()))
        elif scheme == "dsa" and isinstance(key, dsa.DSAPublicKey):
            if key.key_size > MAX_DSA_BITS:
                raise UnsupportedAlgorithm(f"DSA keys over {MAX_DSA_BITS} bits are not checked")
            key.verify(signature, data, HASH_FACTORIES[str(hash_name)]())
        elif scheme == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif scheme == "ed448" and isinstance(key, ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            raise KeyMismatch(f"signature algorithm {scheme} does not fit this key")
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class SignedParts:
    """A signed X.509 structure (certificate, CRL, OCSP basic response) cut into what was signed,
    how, and the signature: ``Certificate ::= SEQUENCE { tbs, signatureAlgorithm, signature }``
    and the others have the same shape."""

    tbs: bytes
    algorithm_oid: str
    algorithm_parameters: Any
    signature: bytes


def signed_parts(der: bytes) -> SignedParts:
    """Split a DER certificate or CRL into its signed parts, as received (never re-encoded).

    Raises ``ValueError`` when ``der`` does not have that shape.
    """
    [(tag, _, value)] = der_elements(der)
    fields = der_elements(value) if tag == 0x30 else []
    if len(fields) != 3 or [t for t, _, _ in fields] != [0x30, 0x30, 0x03]:
        raise ValueError("not a SEQUENCE of to-be-signed data, algorithm and signature")
    (_, tbs, _), (_, algorithm_der, _), (_, _, bits) = fields
    if not bits or bits[0] != 0:
        raise ValueError("the signature BIT STRING has unused bits")
    algorithm = algos.SignedDigestAlgorithm.load(algorithm_der)
    return SignedParts(tbs, algorithm["algorithm"].dotted, algorithm["parameters"], bits[1:])


def signed_by(
    key: CertificatePublicKeyTypes,
    signature: bytes,
    data: bytes,
    algorithm_oid: str,
    parameters: Any = None,
) -> bool:
    """True when ``signature`` over ``data``, made with the algorithm ``algorithm_oid`` (and its
    asn1crypto ``parameters``), verifies with ``key``, whatever its hash. False for a wrong
    signature, a key of another type, or an algorithm we cannot check. Never raises."""
    try:
        algorithm = signature_algorithm(algorithm_oid, parameters)
        return signature_verifies(key, signature, data, algorithm)
    except (ValueError, TypeError, KeyMismatch, UnsupportedAlgorithm, SignatureAlgorithmError):
        return False


def certificate_signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key made ``child``'s signature (names are the caller's business).
    Never raises."""
    try:
        key = issuer.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return structure_signed_by(child.public_bytes(Encoding.DER), key)


def structure_signed_by(der: bytes, key: CertificatePublicKeyTypes) -> bool:
    """True when the certificate or CRL in ``der`` carries a sound signature by ``key``, whatever
    its hash (judging a weak hash is the caller's business). False for a wrong signature, a
    key of another type, or an algorithm we cannot check. Never raises."""
    try:
        parts = signed_parts(der)
    except ValueError:
        return False
    return signed_by(
        key, parts.signature, parts.tbs, parts.algorithm_oid, parts.algorithm_parameters
    )
