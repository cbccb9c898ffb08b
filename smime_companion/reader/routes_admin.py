"""Looking after things: the certificates (trust, key-change alerts to confirm or refuse,
import), the state of each account (last sync, errors, IDLE), the outbox queue and the kept
drafts, and signing out."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, redirect, render_template, request, url_for

from smime_companion import keyfiles
from smime_companion.core.selection import effective_trust
from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.harvest import import_sightings
from smime_companion.outbox.journal_drafts import draft_id_of
from smime_companion.reader import compose
from smime_companion.reader.security import COOKIE
from smime_companion.reader.web_state import reader
from smime_companion.store.draft_table import DRAFT_SAVED


def register(app: Flask) -> None:
    """Add the certificates, status, outbox and sign-out routes to ``app``."""
    app.add_url_rule("/certificates", "certificates", certificates)
    app.add_url_rule("/certificates/<fingerprint>/trust", "trust", trust, methods=["POST"])
    app.add_url_rule("/certificates/<fingerprint>/refuse", "refuse", refuse, methods=["POST"])
    app.add_url_rule("/certificates/import", "import_certs", import_certs, methods=["POST"])
    app.add_url_rule("/status", "status", status)
    app.add_url_rule("/outbox", "outbox", outbox)
    app.add_url_rule("/signout", "signout", signout, methods=["POST"])


def certificates(message: str | None = None, error: str | None = None) -> str:
    """Every certificate by address, with its trust; key changes first."""
    state = reader()
    now = state.context.clock()
    records = state.stores.certs().records()
    rows = [(r, str(effective_trust(r, now))) for r in records]
    changed = [row for row in rows if row[1] == "key-changed"]
    return render_template(
        "certificates.html",
        rows=rows,
        changed=changed,
        message=message or request.args.get("message"),
        error=error,
    )


def trust(fingerprint: str) -> Response:
    """Confirm a certificate (a changed key): it is pinned, the old key un-pinned."""
    try:
        records = reader().stores.certs().trust(fingerprint)
    except UsageError as exc:
        return certificates(error=str(exc))  # type: ignore[return-value]
    who = ", ".join(sorted({r.address for r in records}))
    return redirect(url_for("certificates", message=f"Trusted the new key of {who}."))  # type: ignore[return-value]


def refuse(fingerprint: str) -> Response:
    """Refuse a changed key: the new certificate is deleted (and asked about again if it comes
    back); the key pinned before stays."""
    try:
        reader().stores.certs().forget(fingerprint)
    except UsageError as exc:
        return certificates(error=str(exc))  # type: ignore[return-value]
    return redirect(url_for("certificates", message="Refused: that certificate was deleted."))  # type: ignore[return-value]


def import_certs() -> Response | str:
    """Import the certificates of an uploaded PEM or DER file."""
    state = reader()
    upload = request.files.get("file")
    data = upload.read() if upload is not None else b""
    if not data:
        return certificates(error="Choose a certificate file to import.")
    try:
        certs = keyfiles.certificates_from_bytes(data, upload.filename or "upload")  # type: ignore[union-attr]
        store = state.stores.certs()
        sightings = import_sightings(
            certs, store.intermediates(), state.context.anchors(), state.context.clock()
        )
        if not sightings:
            return certificates(error="That file holds no email certificate.")
        recorded = [r for s in sightings for r in store.record(s)]
    except SmimeCompanionError as exc:
        return certificates(error=str(exc))
    words = ", ".join(f"{r.address} ({r.trust})" for r in recorded)
    return redirect(url_for("certificates", message=f"Imported: {words}."))  # type: ignore[return-value]


def status() -> str:
    """Per account: each folder's last sync, cached count, error and watcher state; the
    daemon's state."""
    state = reader()
    live = state.context.daemon_status() or {}
    running = bool(live.get("running"))
    cache = state.stores.cache()
    counts = {(c.account, c.folder): c for c in cache.folder_counts()}
    accounts: list[dict[str, Any]] = []
    for info in state.context.accounts:
        live_account = (live.get("accounts") or {}).get(info.name, {})
        watch = live_account.get("folders", {}) if running else {}
        names = [f for a, f in counts if a == info.name] + [f for f in watch if f]
        folders = []
        for name in dict.fromkeys(names):
            folder_state = cache.folder_state(info.name, name)
            count = counts.get((info.name, name))
            folders.append(
                {
                    "name": name,
                    "messages": count.messages if count else 0,
                    "unread": count.unread if count else 0,
                    "last_sync": folder_state.last_sync if folder_state else None,
                    "error": folder_state.error if folder_state else None,
                    "watch": watch.get(name),
                }
            )
        accounts.append(
            {
                "name": info.name,
                "error": live_account.get("error") if running else None,
                "folders": folders,
            }
        )
    return render_template(
        "status.html", running=running, updated=live.get("updated"), accounts=accounts
    )


def outbox() -> str:
    """The outbox journal's items, newest first, and the drafts kept in it."""
    journal = reader().stores.journal()
    items = list(reversed(journal.items()))[:200]
    drafts = []
    for kept in reversed(journal.drafts()):
        try:
            fields = compose.read_draft(kept.message, kept.account)[0]
        except SmimeCompanionError:
            fields = compose.DraftFields(kept.account, "")
        drafts.append((kept, fields))
    return render_template(
        "outbox.html",
        items=[(i, draft_id_of(i.ref or "")) for i in items],
        drafts=drafts,
        saved=DRAFT_SAVED,
    )


def signout() -> Response:
    """End this browser's session."""
    reader().sessions.end(request.cookies.get(COOKIE))
    response = Response(
        render_template(
            "refused.html",
            title="Signed out",
            text="You are signed out. Run 'smime-companion reader' to sign in again.",
            signed_in=False,
        ),
        mimetype="text/html",
    )
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response
