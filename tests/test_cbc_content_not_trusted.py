"""Unauthenticated CBC content is not trusted (issue 14): anyone who knows a block of the
plaintext can splice blocks into a CBC ciphertext (EFAIL's gadgets) and it still decrypts
without error. Such content, with no sound signature inside the encryption, keeps decryption
``ok`` but is flagged ``not-integrity-protected`` and is not ``ok`` (``open`` exits 1); content
that GCM or a signature inside protects stays ``ok``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from smime_companion.core.open import open_message
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.testing.pki import TestPki
from tests.chaos import forged
from tests.conftest import load_identity
from tests.tools import mime_message, minimal_env, openssl_cms


def _open(raw: bytes, pki, anchors, now):
    return open_message(raw, identities=[load_identity(pki, "bob")], anchors=anchors, at=now)


def test_a_cbc_gadget_decrypts_ok_but_the_content_is_not_trusted(pki, anchors, now) -> None:
    genuine, gadget = forged.cbc_gadget(pki, b"X-Gadget:  1\r\nX:")
    for raw in (genuine, gadget):
        result = _open(raw, pki, anchors, now)
        assert result.decryption == Decryption.OK
        assert result.warnings == ("not-integrity-protected",)
        assert not result.integrity_protected
        assert not result.ok
    # The gadget worked: the attacker chose the first block without any key.
    opened = _open(gadget, pki, anchors, now)
    assert opened.content.startswith(b"X-Gadget:  1\r\nX:") and opened.error is None


def test_a_broken_signature_inside_cbc_does_not_protect_it(pki, anchors, now) -> None:
    signed = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice")], mime_message()
    )
    broken = signed.replace(b"this is a test", b"this is a TEST")  # the signed part altered
    sealed = openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert("bob")], broken)
    result = _open(sealed, pki, anchors, now)
    assert result.signature == SignatureStatus.INVALID
    assert "not-integrity-protected" in result.warnings


def test_cbc_with_a_sound_signature_inside_is_ok(pki, anchors, now) -> None:
    signed = openssl_cms(
        ["-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-certfile",
         pki.intermediate],
        mime_message(),
    )  # fmt: skip
    result = _open(openssl_cms(["-encrypt", "-aes256", "-recip", pki.cert("bob")], signed),
                   pki, anchors, now)  # fmt: skip
    assert result.ok and result.integrity_protected
    assert result.warnings == ()


def test_open_exits_1_for_unauthenticated_cbc_and_0_for_gcm(pki: TestPki, tmp_path: Path) -> None:
    genuine, _ = forged.cbc_gadget(pki)
    gcm = openssl_cms(["-encrypt", "-aes-256-gcm", "-recip", pki.cert("bob")], mime_message())
    codes = {}
    for name, raw in (("cbc", genuine), ("gcm", gcm)):
        path = tmp_path / f"{name}.eml"
        path.write_bytes(raw)
        proc = subprocess.run(
            [sys.executable, "-m", "smime_companion", "open", str(path), "--key",
             str(pki.key("bob")), "--cert", str(pki.cert("bob")), "--json"],
            capture_output=True, timeout=60, env=minimal_env(),
        )  # fmt: skip
        codes[name] = proc.returncode
        report = json.loads(proc.stdout)
        assert report["decryption"] == "ok"
    assert codes == {"cbc": 1, "gcm": 0}
