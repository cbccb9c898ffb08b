"""Key agreement (RFC 5652 KeyAgreeRecipientInfo): ephemeral-static ECDH on the NIST curves
(RFC 5753) and X25519 / X448 (RFC 8418), recovering the content-encryption key with one of our
keys: the shared secret, a KDF (X9.63 or HKDF) over ECC-CMS-SharedInfo, then the key unwrapped.
"""

from __future__ import annotations

from asn1crypto import cms, core
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap

from smime_companion.core.cms_algorithms import (
    CURVE_NAMES,
    CURVE_OIDS,
    ECDH_SCHEMES,
    HKDF_SCHEMES,
    KEY_WRAPS,
    X_CURVES,
    AnyAlgorithmIdentifier,
    KeyWrap,
    decode_key_wrap_algorithm,
    describe_oid,
    ecc_cms_shared_info,
    hkdf,
    unwrap_key,
    x963_kdf,
)
from smime_companion.core.envelope import ContentKey, DecryptFailure, EnvelopeRecipient
from smime_companion.core.model import Identity
from smime_companion.core.verdicts import Decryption

_EC_PUBLIC_KEY = "1.2.840.10045.2.1"


def key_agreement(recipient: EnvelopeRecipient, identity: Identity) -> ContentKey:
    """The content-encryption key ``recipient`` (one RecipientEncryptedKey of a
    KeyAgreeRecipientInfo) carries for ``identity``: ephemeral-static ECDH (RFC 5753), or X25519 /
    X448 (RFC 8418). Raises :class:`DecryptFailure`, or a parse error of asn1crypto."""
    kari = recipient.info
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise DecryptFailure(
            Decryption.UNSUPPORTED,
            "key agreement with the originator's certificate (static-static ECDH) is not supported",
        )
    key_algorithm = originator.chosen["algorithm"]["algorithm"].dotted
    if key_algorithm in X_CURVES:
        return _x_key_agreement(recipient, identity, X_CURVES[key_algorithm])
    if key_algorithm != _EC_PUBLIC_KEY:
        raise DecryptFailure(
            Decryption.UNSUPPORTED,
            f"ECDH with originator key type {describe_oid(key_algorithm)} is not supported",
        )
    return _ecdh_key_agreement(recipient, identity)


def _ecdh_key_agreement(recipient: EnvelopeRecipient, identity: Identity) -> ContentKey:
    """Ephemeral-static ECDH (RFC 5753): X9.63 KDF over ECC-CMS-SharedInfo, then key unwrap."""
    kari = recipient.info
    public_key_info = kari["originator"].chosen
    scheme_oid = kari["key_encryption_algorithm"]["algorithm"].dotted
    scheme = ECDH_SCHEMES.get(scheme_oid)
    if scheme is None:
        raise DecryptFailure(
            Decryption.UNSUPPORTED,
            f"key agreement algorithm {describe_oid(scheme_oid)} is not supported",
        )
    key = identity.key
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DecryptFailure(
            Decryption.FAILED, "ECDH recipient, but the matching certificate's key is not EC"
        )
    curve = CURVE_NAMES.get(key.curve.name)
    if curve is None:
        raise DecryptFailure(
            Decryption.UNSUPPORTED, f"ECDH on curve {key.curve.name} is not supported"
        )
    # Cofactor DH multiplies by the curve's cofactor, which is 1 for the NIST prime curves, so
    # both variants compute the same shared secret here.
    name = f"ecdh-{curve}-{scheme.hash_name}" + ("-cofactor" if scheme.cofactor else "")
    _check_originator_curve(public_key_info["algorithm"]["parameters"], key, name)
    wrap_algorithm, wrap = _key_wrap(kari, name)
    point = bytes(public_key_info["public_key"].native)
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
    except ValueError:
        raise DecryptFailure(
            Decryption.MALFORMED, f"the originator key is not a point on {key.curve.name}", name
        ) from None
    shared_secret = key.exchange(ec.ECDH(), peer)
    kek = x963_kdf(
        scheme.hash_name,
        shared_secret,
        wrap.kek_size,
        ecc_cms_shared_info(wrap_algorithm, _ukm(kari)),
    )
    try:
        cek = unwrap_key(wrap, kek, recipient.encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise DecryptFailure(
            Decryption.FAILED,
            f"{wrap.name} unwrap failed: wrong key or altered message",
            name,
        ) from None
    return ContentKey(cek, name, weak=wrap.kind == "3des")


def _check_originator_curve(
    curve_params: core.Asn1Value, key: ec.EllipticCurvePrivateKey, name: str
) -> None:
    """Raises DecryptFailure when the originator key's parameters name another curve than ours,
    or spell a curve out explicitly."""
    # OpenSSL leaves the originator's curve out (it must be the recipient's); when present it
    # has to name our curve.
    if not isinstance(curve_params, core.Void) and curve_params.name == "named":
        their_curve = CURVE_OIDS.get(curve_params.chosen.dotted, curve_params.chosen.dotted)
        if their_curve != key.curve.name:
            raise DecryptFailure(
                Decryption.FAILED,
                f"originator key is on curve {their_curve}, our key on {key.curve.name}",
                name,
            )
    elif not isinstance(curve_params, core.Void) and curve_params.name == "specified":
        raise DecryptFailure(
            Decryption.UNSUPPORTED, "originator key with explicit curve parameters", name
        )


def _key_wrap(kari: cms.KeyAgreeRecipientInfo, name: str) -> tuple[AnyAlgorithmIdentifier, KeyWrap]:
    """The KeyAgreeRecipientInfo's key wrap AlgorithmIdentifier and our key wrap for it.
    Raises DecryptFailure for a key wrap we do not implement."""
    wrap_algorithm = decode_key_wrap_algorithm(kari["key_encryption_algorithm"]["parameters"])
    wrap_oid = wrap_algorithm["algorithm"].dotted
    wrap = KEY_WRAPS.get(wrap_oid)
    if wrap is None:
        raise DecryptFailure(
            Decryption.UNSUPPORTED,
            f"key wrap algorithm {describe_oid(wrap_oid)} is not supported",
            name,
        )
    return wrap_algorithm, wrap


def _ukm(kari: cms.KeyAgreeRecipientInfo) -> bytes | None:
    """The user keying material, or None when the sender gave none."""
    ukm = kari["ukm"]
    return None if isinstance(ukm, core.Void) else bytes(ukm.native)


def _x_key_agreement(recipient: EnvelopeRecipient, identity: Identity, curve: str) -> ContentKey:
    """Ephemeral-static X25519 / X448 (RFC 8418): HKDF, or the X9.63 KDF of RFC 5753, over
    ECC-CMS-SharedInfo, then key unwrap."""
    kari = recipient.info
    key = identity.key
    private_type = x25519.X25519PrivateKey if curve == "x25519" else x448.X448PrivateKey
    public_type = x25519.X25519PublicKey if curve == "x25519" else x448.X448PublicKey
    if not isinstance(key, private_type):
        raise DecryptFailure(
            Decryption.FAILED,
            f"{curve} recipient, but the matching certificate's key is not {curve}",
        )
    scheme_oid = kari["key_encryption_algorithm"]["algorithm"].dotted
    x963 = ECDH_SCHEMES.get(scheme_oid)
    hkdf_hash = HKDF_SCHEMES.get(scheme_oid)
    if x963 is None and hkdf_hash is None:
        raise DecryptFailure(
            Decryption.UNSUPPORTED,
            f"key agreement algorithm {describe_oid(scheme_oid)} is not supported with {curve}",
        )
    name = f"{curve}-hkdf-{hkdf_hash}" if hkdf_hash else f"{curve}-{x963.hash_name}"  # type: ignore[union-attr]
    wrap_algorithm, wrap = _key_wrap(kari, name)
    point = bytes(kari["originator"].chosen["public_key"].native)
    try:
        shared_secret = key.exchange(public_type.from_public_bytes(point))  # type: ignore[arg-type]
    except ValueError:
        # A point of the wrong size, or one of small order (an all-zero shared secret).
        raise DecryptFailure(
            Decryption.MALFORMED, f"the originator key is not a usable {curve} key", name
        ) from None
    ukm_bytes = _ukm(kari)
    shared_info = ecc_cms_shared_info(wrap_algorithm, ukm_bytes)
    if hkdf_hash is None:
        assert x963 is not None
        keks = [x963_kdf(x963.hash_name, shared_secret, wrap.kek_size, shared_info)]
    else:
        # RFC 8418 puts the ukm into the SharedInfo; some senders also use it as HKDF's salt.
        # The key wrap's integrity check tells which one the sender meant.
        salts = [None, ukm_bytes] if ukm_bytes else [None]
        keks = [hkdf(hkdf_hash, shared_secret, wrap.kek_size, shared_info, s) for s in salts]
    for kek in keks:
        try:
            return ContentKey(unwrap_key(wrap, kek, recipient.encrypted_key), name, weak=False)
        except (InvalidUnwrap, ValueError):
            continue
    raise DecryptFailure(
        Decryption.FAILED, f"{wrap.name} unwrap failed: wrong key or altered message", name
    )
