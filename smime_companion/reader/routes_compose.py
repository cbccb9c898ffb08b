"""Writing: compose, reply, reply-all and forward; saving a draft or sending it (straight into
the encrypted outbox journal); following it on its way; retrying or sending again what was held;
and the recipients' certificate status as they are typed."""

from __future__ import annotations

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for

from smime_companion.core.mime import addresses
from smime_companion.errors import MalformedInput, UsageError
from smime_companion.outbox.journal_drafts import QUEUED
from smime_companion.reader import compose
from smime_companion.reader.web_state import reader


def register(app: Flask) -> None:
    """Add the writing routes to ``app``."""
    app.add_url_rule("/compose", "compose", compose_page, methods=["GET", "POST"])
    app.add_url_rule("/draft/<int:draft_id>", "draft", draft_page)
    app.add_url_rule("/api/draft/<int:draft_id>", "api_draft", api_draft)
    app.add_url_rule("/draft/<int:draft_id>/retry", "retry_draft", retry_draft, methods=["POST"])
    app.add_url_rule("/draft/<int:draft_id>/delete", "delete_draft", delete_draft, methods=["POST"])
    app.add_url_rule("/api/recipients", "api_recipients", api_recipients)


def _senders() -> list[compose.Sender]:
    state = reader()
    return compose.senders(state.context.accounts, state.context.identities())


def _sender(key: str) -> compose.Sender:
    choices = _senders()
    for choice in choices:
        if choice.key == key:
            return choice
    if not choices:
        raise UsageError(
            "no identity can send: configure an account with smtp_host and an identity"
        )
    return choices[0]


def compose_page() -> Response | str:
    """GET: a new message, an answer (``reply``, ``reply-all``, ``forward`` = message id) or a
    kept draft (``draft`` = id). POST: save it (``action=save``) or send it (``action=send``)."""
    state = reader()
    if request.method == "POST":
        return _submit()
    senders = _senders()
    draft_id = request.args.get("draft", type=int)
    fields: compose.DraftFields | None = None
    error = None
    try:
        if draft_id is not None:
            kept = state.stores.journal().draft(draft_id)
            if kept is None:
                abort(404)
            fields = compose.read_draft(kept.message, kept.account)[0]
        else:
            default = senders[0] if senders else compose.Sender("", "")
            for mode in compose.MODES:
                answered = request.args.get(mode, type=int)
                if answered is not None:
                    fields = compose.answer_fields(
                        state.stores.cache(),
                        answered,
                        mode,
                        default,
                        reader().context.own_addresses(),
                    )
                    break
            if fields is None:
                fields = compose.DraftFields(
                    default.account, default.address, to=request.args.get("to", "")
                )
    except (UsageError, MalformedInput) as exc:
        error = str(exc)
        fields = compose.DraftFields("", "")
    return render_template(
        "compose.html",
        fields=fields,
        senders=senders,
        draft_id=draft_id,
        error=error,
        policy=state.context.missing_cert,
    )


def _fields_from_form(draft_id: int | None) -> compose.DraftFields:
    form = request.form
    sender = _sender(form.get("sender", ""))
    attachments: tuple[compose.Attached, ...] = ()
    if draft_id is not None:  # a kept draft keeps its attachments (a forward's files)
        kept = reader().stores.journal().draft(draft_id)
        if kept is not None:
            try:
                attachments = compose.read_draft(kept.message, kept.account)[0].attachments
            except MalformedInput:
                attachments = ()
    forwarded = form.get("forward_of", type=int)
    if forwarded is not None and draft_id is None:
        attachments = compose.answer_fields(
            reader().stores.cache(), forwarded, "forward", sender, ()
        ).attachments
    return compose.DraftFields(
        account=sender.account,
        sender=sender.address,
        to=form.get("to", ""),
        cc=form.get("cc", ""),
        bcc=form.get("bcc", ""),
        subject=form.get("subject", ""),
        body=form.get("body", ""),
        in_reply_to=form.get("in_reply_to", ""),
        references=form.get("references", ""),
        attachments=attachments,
    )


def _submit() -> Response | str:
    state = reader()
    draft_id = request.form.get("draft_id", type=int)
    send = request.form.get("action") == "send"
    try:
        fields = _fields_from_form(draft_id)
        saved = compose.save(
            state.stores.journal(), fields, state.context.clock(), send=send, draft_id=draft_id
        )
    except UsageError as exc:
        return render_template(
            "compose.html",
            fields=compose.DraftFields(
                "", request.form.get("sender", "").partition(" ")[2],
                to=request.form.get("to", ""), cc=request.form.get("cc", ""),
                bcc=request.form.get("bcc", ""), subject=request.form.get("subject", ""),
                body=request.form.get("body", ""),
                in_reply_to=request.form.get("in_reply_to", ""),
                references=request.form.get("references", ""),
            ),
            senders=_senders(),
            draft_id=draft_id,
            error=str(exc),
            policy=state.context.missing_cert,
        )  # fmt: skip
    if send:
        state.context.kick_outbox(fields.account)
    return redirect(url_for("draft", draft_id=saved))  # type: ignore[return-value]


def _progress_json(draft_id: int) -> dict[str, object]:
    state = reader()
    journal = state.stores.journal()
    kept = journal.draft(draft_id)
    account = kept.account if kept is not None else request.args.get("account", "")
    if kept is None and not account:
        # The draft was sent and removed: find its account from the items.
        for info in state.context.accounts:
            found = compose.progress(journal, info.name, draft_id)
            if found.stage != "gone":
                return {**found.__dict__, "account": info.name}
        return {**compose.progress(journal, "", draft_id).__dict__, "account": ""}
    return {**compose.progress(journal, account, draft_id).__dict__, "account": account}


def draft_page(draft_id: int) -> str:
    """Where a draft is on its way; the page follows it until it is sent or stopped."""
    progress = _progress_json(draft_id)
    journal = reader().stores.journal()
    kept = journal.draft(draft_id)
    subject = ""
    if kept is not None:
        try:
            subject = compose.read_draft(kept.message, kept.account)[0].subject
        except MalformedInput:
            subject = ""
    elif progress.get("item_id"):  # sent: the draft is gone, its journal item remembers
        subject = journal.item(int(str(progress["item_id"]))).subject or ""
    return render_template("draft.html", progress=progress, draft_id=draft_id, subject=subject)


def api_draft(draft_id: int) -> Response:
    """The progress of a draft, as JSON."""
    return jsonify(_progress_json(draft_id))


def retry_draft(draft_id: int) -> Response:
    """Send again: a held or uncertain item's sealed copies (``outbox retry``), or a held or
    rejected draft put back in the queue."""
    state = reader()
    journal = state.stores.journal()
    progress = _progress_json(draft_id)
    account = str(progress["account"])
    now = state.context.clock()
    if progress.get("can_retry") and progress.get("item_id"):
        journal.retry(int(str(progress["item_id"])), now)
    elif progress.get("can_send_again") and journal.draft(draft_id) is not None:
        journal.move_draft(draft_id, QUEUED, now)
    else:
        abort(409)
    state.context.kick_outbox(account)
    return redirect(url_for("draft", draft_id=draft_id))  # type: ignore[return-value]


def delete_draft(draft_id: int) -> Response:
    """Forget a kept draft (its bytes are overwritten in the journal)."""
    reader().stores.journal().delete_draft(draft_id)
    return redirect(url_for("outbox"))  # type: ignore[return-value]


def api_recipients() -> Response:
    """For each address in ``to``, ``cc`` and ``bcc``: what sending would do (encrypt, hold,
    sign-only, split), from the certificate store as the outbox will see it."""
    state = reader()
    found: list[str] = []
    for name in ("to", "cc", "bcc"):
        found.extend(a for a in addresses(request.args.get(name, "")) if a not in found)
    store = state.stores.certs()
    lookup = state.context.lookup(store)
    now = state.context.clock()
    own = reader().context.own_addresses()
    statuses = [
        compose.recipient_status(a, lookup, now, state.context.missing_cert, own)
        for a in found[:100]
    ]
    return jsonify([s.__dict__ for s in statuses])
