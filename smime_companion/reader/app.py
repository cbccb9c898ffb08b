"""The reader's Flask application: the security checks every request passes, the headers every
response carries, and the routes (``routes_mail``, ``routes_compose``, ``routes_admin``).

Flask because the reader runs inside the threaded daemon, whose stores use the blocking SQLite
driver: a WSGI application served by waitress's thread pool uses them as every other thread
does, with no event loop to bridge. Pages are rendered on the server by Jinja2 with
autoescaping on; the little JavaScript they use is a file of this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request

from smime_companion.core import printable
from smime_companion.core.certs import describe_subject
from smime_companion.reader import (
    dates,
    quote_folding,
    routes_admin,
    routes_compose,
    routes_mail,
)
from smime_companion.reader.context import ReaderContext, ThreadStores
from smime_companion.reader.security import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    Sessions,
    SignInTokens,
    csrf_ok,
    host_ok,
    origin_ok,
)
from smime_companion.reader.web_state import Reader, reader

HERE = Path(__file__).resolve().parent
# A page of ours: its own scripts, styles and images only; framed by nothing; frames only our
# own message bodies.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
# Endpoints that need no session: the sign-in exchange and the static files (not secret).
OPEN_ENDPOINTS = frozenset({"signin", "static"})
MAX_UPLOAD_BYTES = 30 * 1024 * 1024


def create_app(context: ReaderContext, port: int) -> Flask:
    """The reader application for ``context``, answering only requests addressed to the
    loopback server on ``port``."""
    app = Flask(
        "smime_companion.reader",
        root_path=str(HERE),
        template_folder="templates",
        static_folder="static",
    )
    app.config.update(MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES, TEMPLATES_AUTO_RELOAD=False)
    app.extensions["reader"] = Reader(
        context,
        ThreadStores(context.stores),
        Sessions(context.idle),
        SignInTokens(context.state_dir),
        port,
    )
    app.before_request(_check_request)
    app.after_request(_protect_response)
    app.context_processor(_template_values)
    # A name the sender chose for a file: its bidirectional and control characters shown
    # escaped, so "invoice\u202egpj.exe" cannot pass for "invoiceexe.jpg".
    app.add_template_filter(printable.for_terminal, "visible_controls")
    app.add_template_filter(describe_subject, "subject")
    app.add_template_filter(dates.shown_header_date, "header_date")
    app.add_template_filter(quote_folding.fold_quotes, "fold_quotes")
    routes_mail.register(app)
    routes_compose.register(app)
    routes_admin.register(app)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(413, _too_large)
    return app


def _refuse(status: int, title: str, text: str) -> Response:
    if request.path.startswith("/api/"):
        response = jsonify({"error": text})
        response.status_code = status
        return response
    page = render_template("refused.html", title=title, text=text, signed_in=False)
    return Response(page, status=status, mimetype="text/html")


def _check_request() -> Response | None:
    """Every request: the Host, then a session (except to sign in), then for a state change the
    Origin and the CSRF token. A refusal shows no mail."""
    state = reader()
    if not host_ok(request.host, state.port):
        # A DNS-rebinding page reaches us under its own name: answer nothing of substance.
        return Response("wrong Host header\n", status=421, mimetype="text/plain")
    g.session = None
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    session = state.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        return _refuse(
            401,
            "Signed out",
            "You are not signed in, or your session ended. Run 'smime-companion reader' for a "
            "new sign-in link.",
        )
    if request.method not in ("GET", "HEAD"):
        if not origin_ok(
            request.headers.get("Origin"),
            request.host,
            state.port,
            request.headers.get("Sec-Fetch-Site"),
        ):
            return _refuse(403, "Refused", "This request did not come from the reader's pages.")
        sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
        if not csrf_ok(session, sent):
            return _refuse(403, "Refused", "The form was stale or forged; reload the page.")
    g.session = session
    return None


def _protect_response(response: Response) -> Response:
    """Headers on everything: nothing is cached or sent as a referrer, types are not guessed,
    no host named in a page is looked up before it is visited, nothing frames us (the message
    frames set their own policy)."""
    headers = response.headers
    headers["Cache-Control"] = "no-store"
    headers["Pragma"] = "no-cache"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    # A browser may resolve the hosts of a page's links ahead of a click: for a link in a mail,
    # that DNS query tells the sender's name server that (and when) the message was read.
    headers["X-DNS-Prefetch-Control"] = "off"
    headers.setdefault("Content-Security-Policy", PAGE_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    return response


def _template_values() -> dict[str, Any]:
    session = g.get("session")
    return {
        "csrf_token": session.csrf if session is not None else "",
        "signed_in": session is not None,
        "csrf_field": CSRF_FIELD,
    }


def _not_found(error: Any) -> tuple[str, int]:
    return render_template("refused.html", title="Not found", text="There is nothing here."), 404


def _too_large(error: Any) -> tuple[str, int]:
    text = f"The upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
    return render_template("refused.html", title="Too large", text=text), 413
