"""Reading: the mailboxes, the message list and search, a message, its HTML body frame, its
attachments and raw source, the read state, and the JSON the list polls for new mail."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from flask import (
    Flask,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from smime_companion.core import printable
from smime_companion.core import text as mime_text
from smime_companion.errors import SmimeCompanionError, UsageError
from smime_companion.reader import mailbox_view, message_view
from smime_companion.reader.html_mail import MAX_INLINED_BYTES, CleanHtml
from smime_companion.reader.security import COOKIE
from smime_companion.reader.web_state import new_nonce, reader

log = logging.getLogger(__name__)

# The HTML of a message is shown in a sandboxed frame of its own, under this policy: nothing
# but our data: images and our nonce'd style sheet may load, no script runs, no form submits,
# and the frame may only sit inside our own pages.
FRAME_POLICY = (
    "default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; "
    "style-src-attr 'unsafe-inline'; font-src 'none'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
)
# A downloaded part or the raw source is data, never a page.
DATA_POLICY = "default-src 'none'; sandbox"


def register(app: Flask) -> None:
    """Add the reading routes to ``app``."""
    app.add_url_rule("/", "home", home)
    app.add_url_rule("/signin", "signin", signin)
    app.add_url_rule("/mail", "mailbox", mailbox)
    app.add_url_rule("/message/<int:message_id>", "message", message)
    app.add_url_rule("/message/<int:message_id>/html/<int:part>", "html_part", html_part)
    app.add_url_rule("/message/<int:message_id>/part/<int:part>", "download", download)
    app.add_url_rule("/message/<int:message_id>/picture/<int:part>", "picture", picture)
    app.add_url_rule("/message/<int:message_id>/attached/<int:part>", "attached", attached)
    app.add_url_rule("/message/<int:message_id>/smime/<int:number>", "smime_part", smime_part)
    app.add_url_rule("/message/<int:message_id>/raw", "raw", raw)
    app.add_url_rule("/message/<int:message_id>/read", "set_read", set_read, methods=["POST"])
    app.add_url_rule("/api/mailbox", "api_mailbox", api_mailbox)


def home() -> Response:
    """The first folder (INBOX when there is one)."""
    return redirect(url_for("mailbox"))  # type: ignore[return-value]


def signin() -> Response:
    """Trade a one-time token for a session, then go to the mailbox.

    The next page is reached by a refresh from this page (not a redirect) so that the browser,
    having arrived from elsewhere (a terminal, a file), sends the SameSite=Strict cookie with
    it: it is then a navigation started by our own page."""
    state = reader()
    token = request.args.get("token", "")
    if not state.tokens.redeem(token, state.context.clock()):
        page = render_template(
            "refused.html",
            title="Sign-in link used or expired",
            text="This sign-in link was already used or has expired (links last two minutes). "
            "Run 'smime-companion reader' for a new one.",
            signed_in=False,
        )
        return Response(page, status=403, mimetype="text/html")
    cookie, _ = state.sessions.create()
    response = Response(render_template("signin.html", signed_in=False), mimetype="text/html")
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/")
    return response


def _sidebar() -> dict[str, Any]:
    state = reader()
    counts = mailbox_view.folders(state.stores.cache())
    accounts = [a.name for a in state.context.accounts]
    for count in counts:
        if count.account not in accounts:
            accounts.append(count.account)
    tree = [(name, [c for c in counts if c.account == name]) for name in accounts]
    return {"tree": tree, "can_compose": any(a.can_send for a in state.context.accounts)}


def _default_folder() -> tuple[str, str] | None:
    counts = mailbox_view.folders(reader().stores.cache())
    for count in counts:
        if count.folder.upper() == "INBOX":
            return count.account, count.folder
    return (counts[0].account, counts[0].folder) if counts else None


def _list_args() -> tuple[str, str, str, int]:
    account = request.args.get("account", "")
    folder = request.args.get("folder", "")
    query = request.args.get("q", "").strip()
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    return account, folder, query, page


def mailbox() -> str:
    """A folder, or the results of a search (``q``), newest first, paged."""
    state = reader()
    account, folder, query, page = _list_args()
    if not query and not (account and folder):
        default = _default_folder()
        if default is not None:
            account, folder = default
    effective = query or (mailbox_view.folder_query(account, folder) if folder else "")
    error = None
    try:
        listing = mailbox_view.list_page(
            state.stores.cache(),
            effective,
            page,
            state.context.clock(),
            own=state.context.own_addresses(),
        )
    except UsageError as exc:
        error = str(exc)
        listing = mailbox_view.ListPage([], 1, False)
    return render_template(
        "mailbox.html",
        listing=listing,
        account=account,
        folder=folder,
        query=query,
        error=error,
        poll_url=url_for("api_mailbox", account=account, folder=folder, q=query)
        if page == 1
        else "",
        **_sidebar(),
    )


def api_mailbox() -> Response:
    """For the list's polling: the newest message of the list and the folder counts."""
    state = reader()
    account, folder, query, _ = _list_args()
    effective = query or (mailbox_view.folder_query(account, folder) if folder else "")
    try:
        hits = state.stores.cache().search(effective, now=state.context.clock(), limit=1)
    except UsageError as exc:
        return jsonify({"error": str(exc)})
    counts = [
        {"account": c.account, "folder": c.folder, "messages": c.messages, "unread": c.unread}
        for c in mailbox_view.folders(state.stores.cache())
    ]
    return jsonify({"newest": hits[0].id if hits else None, "folders": counts})


def _mark_seen_on_server(message_id: int) -> None:
    state = reader()
    mark = state.context.mark_seen
    if mark is None:
        return
    summary = state.stores.cache().summary(message_id)
    if "\\Seen" in summary.flags:
        return

    def run() -> None:
        try:
            mark(summary)
        except SmimeCompanionError as exc:
            log.warning("marking message %d seen on the server: %s", message_id, exc)

    threading.Thread(target=run, name="mark-seen", daemon=True).start()


def message(message_id: int) -> str:
    """A message: headers, verdict panel, bodies, attachments. Opening it marks it read here
    (and on the server with ``mark_seen_on_server``)."""
    state = reader()
    cache = state.stores.cache()
    try:
        view = message_view.message_view(cache, state.stores.certs(), message_id)
    except UsageError:
        abort(404)
    if request.args.get("keep_unread") is None:
        cache.set_read(message_id, True)
        _mark_seen_on_server(message_id)
    as_text = request.args.get("view") == "text"
    shown_as_text = [b for b in view.bodies if b.kind == "html" and as_text and not b.continued]
    found = message_view.text_bodies(
        cache, message_id, {b.alternative or b.part for b in shown_as_text}
    )
    texts = {b.part: found.get(b.alternative or b.part, "") for b in shown_as_text}
    back = request.args.get("back", "")
    if not back.startswith("/mail"):
        back = url_for("mailbox", account=view.summary.account, folder=view.summary.folder)
    attached_parts = {a.part for a in view.attachments if message_view.is_attached_message(a)}
    # A picture the HTML draws in place is not listed again, as webmail does; the text view
    # draws none, so there every attachment is listed.
    listed = [a for a in view.attachments if as_text or a.part not in view.drawn]
    smime_parts = message_view.smime_parts(cache, message_id)
    if state.context.open_attached is None:
        attached_parts, smime_parts = set(), []
    return render_template(
        "message.html",
        view=view,
        as_text=as_text,
        texts=texts,
        attached_parts=attached_parts,
        listed=listed,
        smime_parts=smime_parts,
        back=back,
        neighbours=_neighbours(back, message_id),
        **_sidebar(),
    )


# A search result list is looked through this far for the messages either side of one.
NEIGHBOUR_SEARCH_LIMIT = 1000


def _neighbours(back: str, message_id: int) -> tuple[int | None, int | None]:
    """The messages before and after this one in the list it was opened from (for j/k): its
    folder, or the first results of the search it was found by."""
    state = reader()
    cache = state.stores.cache()
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query)).get("q", "")
    if not query:
        return cache.folder_neighbours(message_id)
    try:
        ids = [
            h.id
            for h in cache.search(query, now=state.context.clock(), limit=NEIGHBOUR_SEARCH_LIMIT)
        ]
    except UsageError:
        return None, None
    if message_id not in ids:
        return None, None
    index = ids.index(message_id)
    newer = ids[index - 1] if index > 0 else None
    older = ids[index + 1] if index + 1 < len(ids) else None
    return newer, older


def html_part(message_id: int, part: int) -> Response:
    """The sanitised HTML of part ``part``, as a document for the message page's sandboxed
    frame, with link targets shown after each link."""
    cleaned: CleanHtml | None = message_view.html_body(reader().stores.cache(), message_id, part)
    if cleaned is None:
        abort(404)
    nonce = new_nonce()
    page = render_template(
        "frame.html",
        cleaned=cleaned,
        nonce=nonce,
        max_inlined_mb=MAX_INLINED_BYTES // (1024 * 1024),
    )
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = FRAME_POLICY.format(nonce=nonce)
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def attached(message_id: int, part: int) -> str:
    """A message attached to this one (forwarded as an attachment), opened with its own
    verdict."""
    return _opened_on_its_own(message_view.attached_view, message_id, part)


def smime_part(message_id: int, number: int) -> str:
    """A signed or encrypted part of this message that a mailing list, a gateway (or anyone)
    wrapped with text of its own, opened on its own with its own verdict."""
    return _opened_on_its_own(message_view.smime_part_view, message_id, number, smime_part=True)


def _opened_on_its_own(
    view_of: Callable[..., message_view.AttachedView | None],
    message_id: int,
    number: int,
    **values: Any,
) -> str:
    """The page of what ``view_of`` opens of message ``message_id`` on its own (404 when the
    reader cannot open messages or there is no such thing)."""
    state = reader()
    if state.context.open_attached is None:
        abort(404)
    try:
        view = view_of(
            state.stores.cache(), state.stores.certs(), message_id, number,
            state.context.open_attached,
        )  # fmt: skip
    except UsageError:
        abort(404)
    if view is None:
        abort(404)
    return render_template("attached.html", view=view, **values, **_sidebar())


# The file name extension of a part sent without a name, by its type, so that a saved meeting
# invitation opens in a calendar (Outlook sends invitations as a nameless text/calendar part).
_EXTENSIONS = {
    "text/calendar": ".ics", "text/plain": ".txt", "text/html": ".html", "text/csv": ".csv",
    "text/vcard": ".vcf", "text/x-vcard": ".vcf", "message/rfc822": ".eml",
    "application/pdf": ".pdf", "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
    "application/zip": ".zip", "application/ics": ".ics",
}  # fmt: skip


def download(message_id: int, part: int) -> Response:
    """Part ``part`` of the message, as a download (never shown by the browser)."""
    cache = reader().stores.cache()
    content = cache.content(message_id)
    found = mime_text.get_part(content, part) if content is not None else None
    if found is None:
        abort(404)
    # Content that came without a header has its name only in the stored attachment row
    # (contract.pdf inside contract.pdf.p7m, see OpenResult.content_name).
    stored = next((a.filename for a in cache.attachments(message_id) if a.part == part), "")
    # Saved under the name shown on the page (bidirectional controls escaped, see app.py).
    name = printable.for_terminal(found.filename or stored)
    name = name or f"part-{part}{_EXTENSIONS.get(found.mime_type, '')}"
    response = Response(found.data, mimetype="application/octet-stream")
    quoted = urllib.parse.quote(name, safe="")
    # The plain filename is for old browsers: ASCII only (str.isalnum is True for "д" and "中",
    # which no HTTP header can carry); filename* holds the real name.
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    fallback = fallback[:100] or "part"
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"
    )
    response.headers["Content-Security-Policy"] = DATA_POLICY
    return response


def picture(message_id: int, part: int) -> Response:
    """Attached picture ``part``, for the message page's ``<img>``: served as the type its
    bytes say (PNG, JPEG, GIF, WebP), never sniffed, or 404 for anything else."""
    found = message_view.picture(reader().stores.cache(), message_id, part)
    if found is None:
        abort(404)
    kind, data = found
    response = Response(data, mimetype=kind)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = DATA_POLICY
    return response


def raw(message_id: int) -> Response:
    """The raw original, exactly as fetched, as plain text."""
    try:
        data = reader().stores.cache().raw(message_id)
    except UsageError:
        abort(404)
    response = Response(data, mimetype="text/plain")
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["Content-Security-Policy"] = DATA_POLICY
    return response


def set_read(message_id: int) -> Response:
    """Mark the message read or unread (``read`` = 1 or 0) in the reader; back to ``back``."""
    read = request.form.get("read", "1") == "1"
    reader().stores.cache().set_read(message_id, read)
    back = request.form.get("back", "")
    if not back.startswith("/"):
        back = url_for("message", message_id=message_id)
    return redirect(back)  # type: ignore[return-value]
