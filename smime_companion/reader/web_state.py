"""The reader application's state, reachable from any route: the context, the per-thread
stores, the sessions and sign-in tokens, and the port it answers on."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import current_app, g

from smime_companion.reader.context import ReaderContext, ThreadStores
from smime_companion.reader.security import Session, Sessions, SignInTokens


@dataclass
class Reader:
    """The application's state, in ``app.extensions["reader"]``."""

    context: ReaderContext
    stores: ThreadStores
    sessions: Sessions
    tokens: SignInTokens
    port: int


def reader() -> Reader:
    """The state of the application serving the current request."""
    state: Reader = current_app.extensions["reader"]
    return state


def current_session() -> Session:
    """The signed-in session of the current request (the request checks guarantee one)."""
    session: Session = g.session
    return session


def new_nonce() -> str:
    """A fresh nonce for a Content-Security-Policy."""
    return secrets.token_urlsafe(16)
