"""The signer's certificate judged, once its key verified the signature.

The best certification path to a trust anchor (every certificate valid at the time, the
intermediates for email, no weak algorithm, within the name constraints), the signer's own usage
(extendedKeyUsage, keyUsage), and the address rule: the message's one From address must be one
of the certificate's addresses (RFC 8550 section 3).
"""

from __future__ import annotations

from datetime import UTC, datetime

from smime_companion.core.certificate_policies import policy_violation
from smime_companion.core.chain import Cert
from smime_companion.core.mime import holds_address
from smime_companion.core.name_constraints import name_constraint_violation
from smime_companion.core.revocation import revoked_by_carried_crls, revoked_by_carried_ocsp
from smime_companion.core.signer_findings import (
    MIN_RSA_BITS,
    WEAK_HASH_NAMES,
    SignerContext,
    SignerFindings,
    Stage,
)
from smime_companion.core.verdicts import SignatureStatus

S = SignatureStatus


def check_chain(signer: Cert, ctx: SignerContext, f: SignerFindings) -> None:
    """Build the paths from the signer to an anchor and record the best path's problems."""
    builder = ctx.builder
    paths = builder.paths(signer)
    if not paths:
        f.fail(Stage.CHAIN, S.UNTRUSTED, builder.why_not(signer))
        # Every problem found is reported: the signer's own validity too, beside the verdict.
        validity = _validity_problem(signer, "signer certificate", ctx.at)
        if validity is not None:
            f.fail(Stage.CHAIN, *validity)
        return
    judged = []
    for path in paths:
        weaknesses: list[str] = []
        judged.append((path, _path_problems(path, ctx, f.addresses, weaknesses), weaknesses))
    # The best path is the one whose first problem comes latest (none at all is best), then the
    # one with fewest problems: a renewed intermediate wins over an expired twin.
    path, problems, path_weaknesses = min(
        judged, key=lambda item: (min((p[0] for p in item[1]), default=99) * -1, len(item[1]))
    )
    f.chain = tuple(c.cert for c in path)
    f.problems.extend(problems)
    for reason in path_weaknesses:
        if reason not in f.weaknesses:
            f.weaknesses.append(reason)


def _validity_problem(c: Cert, role: str, at: datetime) -> tuple[SignatureStatus, str] | None:
    """``expired`` or ``not-yet-valid`` with its reason when ``c`` is not valid at ``at``."""
    not_before, not_after = c.validity
    if at < not_before:
        return S.NOT_YET_VALID, f"{role} {c.subject_text} is valid from {_moment(not_before, at)}"
    if at > not_after:
        return S.EXPIRED, f"{role} {c.subject_text} expired on {_moment(not_after, at)}"
    return None


def _moment(boundary: datetime, at: datetime) -> str:
    """The date of a validity boundary; with its time (UTC) when the message is judged on that
    same day, where the date alone would seem to say it was still valid."""
    boundary = boundary.astimezone(UTC)
    if boundary.date() == at.astimezone(UTC).date():
        return f"{boundary:%Y-%m-%d} at {boundary:%H:%M:%S} UTC"
    return f"{boundary.date()}"


def _path_problems(
    path: tuple[Cert, ...], ctx: SignerContext, addresses: tuple[str, ...], weaknesses: list[str]
) -> list[tuple[int, SignatureStatus, str]]:
    """The problems of one path; its weak algorithms are added to ``weaknesses`` (and are
    problems only when not accepted)."""
    problems: list[tuple[int, SignatureStatus, str]] = []
    for position, c in enumerate(path):
        role = _role(position, len(path))
        subject = c.subject_text
        validity = _validity_problem(c, role, ctx.at)
        if validity is not None:
            problems.append((Stage.CHAIN, *validity))
        if 0 < position < len(path) - 1 and not c.usable_for_email:
            problems.append(
                (Stage.USAGE, S.BAD_EKU, f"{role} {subject} is not for email protection")
            )
        if position < len(path) - 1:
            # The anchor's own signature and key are not judged: it is trusted by configuration.
            found: list[tuple[str, bool]] = []
            if 0 < position and c.rsa_bits < MIN_RSA_BITS:
                found.append((f"{role} {subject} has an RSA-{c.rsa_bits} key", ctx.allow_weak))
            if c.signature_hash in WEAK_HASH_NAMES:
                hash_name = str(c.signature_hash)
                found.append(
                    (
                        f"{role} {subject} is signed with {WEAK_HASH_NAMES[hash_name]}",
                        ctx.allow_weak or (hash_name == "sha1" and ctx.allow_sha1),
                    )
                )
            for reason, allowed in found:
                weaknesses.append(reason)
                if not allowed:
                    problems.append((Stage.WEAK, S.WEAK_ALGORITHM, reason))
    for position, (c, issuer) in enumerate(zip(path, path[1:], strict=False)):
        revoked = revoked_by_carried_crls(
            c.cert, issuer.cert, ctx.crls, ctx.at
        ) or revoked_by_carried_ocsp(c.cert, issuer.cert, ctx.ocsp_responses, ctx.at)
        if revoked:
            role = _role(position, len(path))
            problems.append((Stage.CHAIN, S.REVOKED, f"{role} {c.subject_text} {revoked}"))
    constraint = name_constraint_violation(path, addresses)
    if constraint:
        problems.append((Stage.CHAIN, S.UNTRUSTED, constraint))
    policy = policy_violation(path)
    if policy:
        problems.append((Stage.CHAIN, S.UNTRUSTED, policy))
    return problems


def _role(position: int, length: int) -> str:
    if position == 0:
        return "signer certificate"
    return "trust anchor" if position == length - 1 else "intermediate"


# --- signer usage and address ----------------------------------------------------------------


def check_signer_usage(signer: Cert, f: SignerFindings) -> None:
    if not signer.usable_for_email:
        f.fail(Stage.USAGE, S.BAD_EKU, "signer certificate's extended key usage excludes email")
    if not signer.allows_signing:
        f.fail(
            Stage.USAGE,
            S.BAD_EKU,
            "signer certificate's key usage has neither digitalSignature nor nonRepudiation",
        )


def check_address(ctx: SignerContext, f: SignerFindings) -> None:
    # RFC 8550 section 3: the signer's address must be the From address; compared lower-cased,
    # an internationalised domain in either form (core.mime.holds_address).
    # Only one From address may be shown beside a valid signature: with two, a reader could be
    # shown the one the signer does not hold.
    matching = [a for a in f.addresses if holds_address(ctx.from_addresses, a)]
    if ctx.from_problem is not None:
        f.fail(
            Stage.ADDRESS,
            S.EMAIL_MISMATCH,
            f"{ctx.from_problem}; a signature is valid only for exactly one From address",
        )
    elif not ctx.from_addresses:
        f.fail(Stage.ADDRESS, S.EMAIL_MISMATCH, "message has no From address")
    elif len(ctx.from_addresses) > 1:
        f.fail(
            Stage.ADDRESS,
            S.EMAIL_MISMATCH,
            f"the message names {len(ctx.from_addresses)} From addresses; a signature is valid "
            "only for exactly one",
        )
    elif not f.addresses:
        f.fail(Stage.ADDRESS, S.EMAIL_MISMATCH, "signer certificate names no email address")
    elif not matching:
        f.fail(
            Stage.ADDRESS,
            S.EMAIL_MISMATCH,
            f"signer is {', '.join(f.addresses)}, not the From address {ctx.from_addresses[0]}",
        )
