"""Every certificate that matches a SignerIdentifier is tried (issue 14). The certificate set of
a SignedData is not signed, so anyone can add a certificate with the signer's issuer and serial
number (or subject key identifier) and another key in front of the real one; taking only the
first match turned alice's ``valid`` into ``invalid``."""

from __future__ import annotations

import pytest

from smime_companion.core.open import open_message
from smime_companion.core.verdicts import SignatureStatus
from tests.chaos import forged


@pytest.mark.parametrize("by_key_id", [False, True], ids=["issuer-serial", "key-id"])
def test_an_impostor_certificate_with_the_signers_identifier_leaves_her_signature_valid(
    pki, anchors, now, by_key_id
) -> None:
    result = open_message(forged.duplicate_signer_id(pki, by_key_id), anchors=anchors, at=now)
    assert result.signature == SignatureStatus.VALID
    [signer] = result.signers
    assert signer.address == "alice@example.org"
    assert signer.certificate is not None
    assert "Impostor" not in signer.certificate.subject.rfc4514_string()
