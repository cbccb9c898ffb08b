"""RSA key transport (RFC 5652 KeyTransRecipientInfo): PKCS#1 v1.5 and RSAES-OAEP (RFC 3560,
RFC 8017), recovering the content-encryption key with one of our RSA keys.

A PKCS#1 v1.5 padding failure never shows as such (Bleichenbacher): a random key of the right
size takes the recovered key's place, so it fails later like any wrong key. That substitute must
be unpredictable, so it is drawn here from ``secrets`` rather than supplied by the caller.
"""

from __future__ import annotations

import secrets

from asn1crypto import core
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa

from smime_companion.core.cms_algorithms import HASHES, ContentCipher, describe_oid
from smime_companion.core.envelope import ContentKey, DecryptFailure, EnvelopeRecipient
from smime_companion.core.model import Identity
from smime_companion.core.verdicts import Decryption

_RSA_PKCS1 = "1.2.840.113549.1.1.1"
_RSA_OAEP = "1.2.840.113549.1.1.7"


def key_transport(
    recipient: EnvelopeRecipient, identity: Identity, cipher: ContentCipher
) -> ContentKey:
    """RSA key transport, PKCS#1 v1.5 (RFC 5652) or RSAES-OAEP (RFC 3560 / RFC 8017)."""
    oid = recipient.algorithm_oid or recipient.info["key_encryption_algorithm"]["algorithm"].dotted
    key = identity.key
    if oid == _RSA_PKCS1:
        name = "rsa-pkcs1v15"
        _require_rsa(key, name)
        assert isinstance(key, rsa.RSAPrivateKey)
        # Against Bleichenbacher-style padding oracles: draw the fallback key first, and on any
        # padding failure or a key of the wrong size continue with it, so that a bad padding shows
        # only as a content decryption failure, like any wrong key.
        fallback = secrets.token_bytes(cipher.key_size)
        try:
            cek = key.decrypt(recipient.encrypted_key, rsa_padding.PKCS1v15())
        except ValueError:
            cek = fallback
        if len(cek) != cipher.key_size:
            cek = fallback
        return ContentKey(cek, name, weak=False)
    if oid == _RSA_OAEP:
        oaep, name = _oaep_padding(recipient.info["key_encryption_algorithm"]["parameters"])
        _require_rsa(key, name)
        assert isinstance(key, rsa.RSAPrivateKey)
        try:
            cek = key.decrypt(recipient.encrypted_key, oaep)
        except ValueError:
            raise DecryptFailure(
                Decryption.FAILED,
                "RSA-OAEP did not decrypt the content-encryption key: wrong key or altered message",
                name,
            ) from None
        return ContentKey(cek, name, weak=False)
    raise DecryptFailure(
        Decryption.UNSUPPORTED, f"key transport algorithm {describe_oid(oid)} is not supported"
    )


def _require_rsa(key: object, name: str) -> None:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DecryptFailure(
            Decryption.FAILED,
            f"{name} recipient, but the matching certificate's key is not RSA",
            name,
        )


def _oaep_padding(parameters: core.Asn1Value) -> tuple[rsa_padding.OAEP, str]:
    """The OAEP padding the RSAES-OAEP-params describe (all SHA-1 when absent), and its name."""
    hash_name, mgf_hash_name, label = "sha1", "sha1", b""
    if not isinstance(parameters, core.Void):
        hash_name = parameters["hash_algorithm"]["algorithm"].native
        mgf = parameters["mask_gen_algorithm"]
        if mgf["algorithm"].native != "mgf1":
            raise DecryptFailure(
                Decryption.UNSUPPORTED,
                f"RSA-OAEP mask generation {mgf['algorithm'].dotted} is not supported",
            )
        mgf_hash_name = mgf["parameters"]["algorithm"].native
        source = parameters["p_source_algorithm"]
        if source["algorithm"].native != "p_specified":
            raise DecryptFailure(
                Decryption.UNSUPPORTED,
                f"RSA-OAEP label source {source['algorithm'].dotted} is not supported",
            )
        label = bytes(source["parameters"].native or b"")
    for chosen in (hash_name, mgf_hash_name):
        if chosen not in HASHES:
            raise DecryptFailure(
                Decryption.UNSUPPORTED, f"RSA-OAEP with hash {chosen} is not supported"
            )
    name = f"rsa-oaep-{hash_name}"
    if mgf_hash_name != hash_name:
        name += f"-mgf1-{mgf_hash_name}"
    padding = rsa_padding.OAEP(
        mgf=rsa_padding.MGF1(HASHES[mgf_hash_name]),
        algorithm=HASHES[hash_name],
        label=label or None,
    )
    return padding, name
