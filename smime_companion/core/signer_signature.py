"""The signature of one SignerInfo: which certificate made it, and whether it verifies.

The SignerIdentifier names the signer's certificate by issuer and serial number or by subject key
identifier; anyone can add certificates that match it (the certificate set is not signed), so
every match is tried, and the one whose key verifies the signature is the signer's. The
signature is then judged for strength (weak hashes, small RSA keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from smime_companion.core.ber_walker import der_elements
from smime_companion.core.chain import Cert
from smime_companion.core.cms import ASN1_ERRORS
from smime_companion.core.mime import holds_address
from smime_companion.core.signatures import (
    HASH_FACTORIES,
    SIGNATURE_ALGORITHMS,
    KeyMismatch,
    SignatureAlgorithm,
    SignatureAlgorithmError,
    signature_algorithm,
    signature_verifies,
)
from smime_companion.core.signed_attributes import signed_bytes
from smime_companion.core.signer_findings import (
    MIN_RSA_BITS,
    WEAK_HASH_NAMES,
    SignerContext,
    SignerFindings,
    Stage,
    StopChecks,
)
from smime_companion.core.verdicts import SignatureStatus
from smime_companion.errors import one_line

S = SignatureStatus


def find_signer_certificate(sid: cms.SignerIdentifier, pool: list[Cert]) -> list[Cert]:
    """The certificates named by the SignerIdentifier: issuerAndSerialNumber or SKI."""
    if sid.name == "issuer_and_serial_number":
        return find_by_issuer(*_issuer_and_serial(sid.chosen), pool)
    return find_by_key_id(bytes(sid.chosen.native), pool)


def find_by_issuer(issuer_der: bytes, serial: int, pool: list[Cert]) -> list[Cert]:
    """Every certificate of ``pool`` with that issuer and serial number, in pool order."""
    found = [c for c in pool if c.serial == serial and c.issuer_der == issuer_der]
    if found:
        return found
    # Fall back to asn1crypto's comparison, which normalises string types and case as
    # RFC 5280 section 7.1 asks, for issuers encoded differently than in the certificate.
    same_serial = [c for c in pool if c.serial == serial]
    if not same_serial:
        return []
    issuer = asn1_x509.Name.load(issuer_der)
    return [c for c in same_serial if _same_name(c.issuer, issuer)]


def find_by_key_id(key_id: bytes, pool: list[Cert]) -> list[Cert]:
    """Every certificate of ``pool`` with that subject key identifier, in pool order."""
    return [c for c in pool if (ids := c.key_ids) is not None and ids[1] == key_id]


def name_signer(cert: Cert, ctx: SignerContext, f: SignerFindings) -> None:
    """Record ``cert`` as the signer's certificate in the findings."""
    f.certificate = cert.cert
    f.chain = (cert.cert,)
    f.addresses = cert.addresses
    matching = [a for a in f.addresses if holds_address(ctx.from_addresses, a)]
    named = matching or list(f.addresses)
    f.address = named[0] if named else None


def verifying_candidate(
    si: cms.SignerInfo,
    signature: bytes,
    signature_oid: str,
    digest_name: str,
    candidates: list[Cert],
    signed_attrs: cms.CMSAttributes | bytes | None,
    ctx: SignerContext,
    f: SignerFindings,
) -> Cert:
    """The first of ``candidates`` whose key verifies the signature, named in the findings with
    what its check found (a weak algorithm, say). When none does, the first candidate's failure
    is recorded and :class:`StopChecks` raised. Every candidate after the first spends one signature
    check of the message's budget; when it runs out, the signer is ``untrusted``."""
    if len(candidates) == 1:  # the usual case: no trial findings to keep apart
        options = signed_bytes(signed_attrs) if signed_attrs is not None else iter([ctx.content])
        _check_signature(si, signature, signature_oid, digest_name, candidates[0], options, ctx, f)
        return candidates[0]
    first: SignerFindings | None = None
    for index, cert in enumerate(candidates):
        if index and not ctx.budget.take_signature_check():
            f.fail(
                Stage.CHAIN,
                S.UNTRUSTED,
                f"gave up after trying {index} certificates that share the signer's identifier",
            )
            raise StopChecks
        trial = SignerFindings()
        options = signed_bytes(signed_attrs) if signed_attrs is not None else iter([ctx.content])
        try:
            _check_signature(si, signature, signature_oid, digest_name, cert, options, ctx, trial)
        except StopChecks:
            if first is None:
                first = trial
            continue
        if index:
            name_signer(cert, ctx, f)
        f.problems.extend(trial.problems)
        f.weaknesses.extend(w for w in trial.weaknesses if w not in f.weaknesses)
        return cert
    assert first is not None
    f.problems.extend(first.problems)
    f.weaknesses.extend(w for w in first.weaknesses if w not in f.weaknesses)
    raise StopChecks


def _issuer_and_serial(ias: cms.IssuerAndSerialNumber) -> tuple[bytes, int]:
    """The issuer's DER and the serial number, read from the DER directly when it is DER."""
    try:
        (name_tag, name, _), (int_tag, _, serial) = der_elements(ias.contents)
        if name_tag == 0x30 and int_tag == 0x02 and serial:
            return name, int.from_bytes(serial, "big", signed=True)
    except ValueError:
        pass
    return ias["issuer"].dump(), int(ias["serial_number"].native)


def _same_name(name: x509.Name, other: asn1_x509.Name) -> bool:
    try:
        return bool(asn1_x509.Name.load(name.public_bytes()) == other)
    except ASN1_ERRORS:
        return False  # a name asn1crypto cannot compare matches no certificate


def _check_signature(
    si: cms.SignerInfo,
    signature: bytes,
    signature_oid: str,
    digest_name: str,
    cert: Cert,
    candidates: Iterator[bytes],
    ctx: SignerContext,
    f: SignerFindings,
) -> None:
    try:
        key = cert.public_key
    except (ValueError, UnsupportedAlgorithm):
        f.fail(Stage.CRYPTO, S.UNSUPPORTED, "the signer certificate's key type is not supported")
        raise StopChecks from None
    # The hash inside the signature: fixed by the OID (sha256WithRSAEncryption...), by the PSS
    # parameters, or else the digestAlgorithm (rsaEncryption, id-ecPublicKey).
    is_pss = SIGNATURE_ALGORITHMS[signature_oid][0] == "rsa-pss"
    try:
        algorithm = signature_algorithm(
            signature_oid, si["signature_algorithm"]["parameters"] if is_pss else None, digest_name
        )
    except SignatureAlgorithmError as exc:
        f.fail(Stage.CRYPTO, S.MALFORMED if exc.malformed else S.UNSUPPORTED, str(exc))
        raise StopChecks from None
    # When the signature algorithm names another hash than the digestAlgorithm (say
    # sha1WithRSAEncryption beside SHA-256), implementations disagree on which one the signature
    # is made over: OpenSSL takes the digestAlgorithm, Heimdal the signature algorithm's. Both
    # are tried, the named one first; the strength is judged on the one that verified.
    algorithms = [algorithm]
    if (
        algorithm.pss is None
        and algorithm.hash_name not in (None, digest_name)
        and digest_name in HASH_FACTORIES
        and digest_name != "shake256"
    ):
        algorithms.append(replace(algorithm, hash_name=digest_name))
    options = list(candidates) if len(algorithms) > 1 else candidates
    used = next((a for a in algorithms if _verifies(key, signature, options, a, cert, f)), None)
    if used is None:
        f.fail(
            Stage.CRYPTO, S.INVALID, "signature does not verify with the signer certificate's key"
        )
        raise StopChecks

    # The signature is sound; now judge how strong its algorithms are.
    for hash_name in dict.fromkeys((digest_name, used.hash_name or digest_name)):
        if hash_name in ("md5", "sha1"):
            f.weak(
                f"signed with {WEAK_HASH_NAMES[hash_name]}, no longer trusted",
                ctx.allow_weak or (hash_name == "sha1" and ctx.allow_sha1),
            )
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        f.weak(f"signer key is RSA-{key.key_size}, under {MIN_RSA_BITS}", ctx.allow_weak)


def _verifies(
    key: CertificatePublicKeyTypes,
    signature: bytes,
    candidates: Iterable[bytes],
    algorithm: SignatureAlgorithm,
    cert: Cert,
    f: SignerFindings,
) -> bool:
    """Whether ``signature`` verifies over one of ``candidates`` with ``algorithm``; a key that
    does not fit the algorithm, or an algorithm the library cannot check, stops the checks."""
    for data in candidates:
        try:
            if signature_verifies(key, signature, data, algorithm):
                return True
        except KeyMismatch:
            f.fail(
                Stage.CRYPTO,
                S.INVALID,
                f"signature algorithm {algorithm.scheme} does not fit a {cert.key_description} key",
            )
            raise StopChecks from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            f.fail(
                Stage.CRYPTO,
                S.UNSUPPORTED,
                f"cannot check {algorithm.scheme} signature: {one_line(exc)}",
            )
            raise StopChecks from None
    return False
