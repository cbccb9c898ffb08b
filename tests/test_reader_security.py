"""The reader's locks, tried over plain HTTP against a served reader: the sign-in token works
once, no session means no mail, a wrong Host is refused (DNS rebinding), another origin can
neither change anything (Origin + CSRF) nor read anything (no CORS), every response forbids
caching and framing, sessions end when idle, and the server listens on loopback only."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from smime_companion.reader.security import Sessions, SignInTokens
from smime_companion.testing.pki import TestPki
from tests.reader_world import World, make_world, message, text_entity

SECRET = "the secret plan is marzipan"


@pytest.fixture()
def world(tmp_path: Path, pki: TestPki, now: dt.datetime) -> Iterator[World]:
    mail = [message("Alice <alice@example.org>", "Plans", now, text_entity(SECRET), "plans")]
    yield from make_world(tmp_path, pki, now, mail)


def test_a_sign_in_token_works_once(world: World) -> None:
    path = world.sign_in_url().split(str(world.port), 1)[1]
    first = world.request("GET", path)
    assert first[0] == 200 and "HttpOnly" in first[1]["Set-Cookie"]
    assert "SameSite=Strict" in first[1]["Set-Cookie"]
    second = world.request("GET", path)
    assert second[0] == 403 and "Set-Cookie" not in second[1]
    assert world.request("GET", "/signin?token=guessed")[0] == 403


def test_an_expired_sign_in_token_is_refused(tmp_path: Path) -> None:
    tokens = SignInTokens(tmp_path)
    issued = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    token = tokens.issue(issued)
    assert not tokens.redeem(token, issued + timedelta(minutes=3))
    assert not tokens.redeem(token, issued)  # gone with the first try
    # Only the token's hash was ever on disk, in a private directory.
    assert (tmp_path / "reader-signin").stat().st_mode & 0o777 == 0o700
    fresh = tokens.issue(issued)
    assert all(fresh not in p.name for p in (tmp_path / "reader-signin").iterdir())


def test_without_a_session_no_page_shows_mail(world: World) -> None:
    paths = ("/mail", "/message/1", "/message/1/raw", "/message/1/html/1", "/message/1/part/1",
             "/api/mailbox", "/compose?reply=1", "/certificates")  # fmt: skip
    for path in paths:
        status, _, body = world.request("GET", path)
        assert status == 401, path
        assert b"marzipan" not in body and b"Plans" not in body
    status, _, body = world.request("GET", "/mail", {"Cookie": "smime_reader_session=forged"})
    assert status == 401 and b"Plans" not in body


def test_a_wrong_host_header_is_refused_even_with_a_session(world: World) -> None:
    cookie, _ = world.session()
    for host in (f"evil.example:{world.port}", "127.0.0.1", f"127.0.0.2:{world.port}"):
        status, _, body = world.request("GET", "/mail", {"Host": host, "Cookie": cookie})
        assert status == 421 and b"Plans" not in body
    assert world.request("GET", "/mail", {"Cookie": cookie})[0] == 200
    assert world.request("GET", "/mail", {"Host": f"localhost:{world.port}",
                                          "Cookie": cookie})[0] == 200  # fmt: skip


def test_another_origin_cannot_change_anything(world: World) -> None:
    cookie, csrf = world.session()
    form = f"csrf={csrf}&read=0".encode()
    kinds = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    own = f"http://127.0.0.1:{world.port}"
    attempts = [
        {},  # no Origin at all
        {"Origin": "http://evil.example"},
        {"Origin": f"http://127.0.0.1:{world.port + 1}"},  # another local port is another origin
        {"Origin": "null"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-origin"},  # no Origin at all
    ]
    for extra in attempts:
        status, _, _ = world.request("POST", "/message/1/read", {**kinds, **extra}, form)
        assert status == 403, extra
    # The right Origin without the session's token is refused too.
    status, _, _ = world.request("POST", "/message/1/read", {**kinds, "Origin": own}, b"read=0")
    assert status == 403
    status, _, _ = world.request(
        "POST", "/message/1/read", {**kinds, "Origin": own}, b"read=0&csrf=wrong"
    )
    assert status == 403
    status, _, _ = world.request("POST", "/message/1/read", {**kinds, "Origin": own}, form)
    assert status == 302
    # Our own form under Referrer-Policy: no-referrer: Origin null, fetched from our origin.
    ours = {**kinds, "Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert world.request("POST", "/message/1/read", ours, form)[0] == 302


def test_another_origin_cannot_read_anything(world: World) -> None:
    cookie, _ = world.session()
    for method in ("GET", "OPTIONS"):
        status, headers, _ = world.request(
            method,
            "/api/mailbox",
            {"Cookie": cookie, "Origin": "http://evil.example",
             "Access-Control-Request-Method": "GET"},
        )  # fmt: skip
        assert not any(h.lower().startswith("access-control-allow") for h in headers), headers
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"


def test_every_response_forbids_caching_referrers_sniffing_and_framing(world: World) -> None:
    cookie, _ = world.session()
    for path in ("/mail", "/message/1", "/message/1/raw", "/static/reader.css", "/nowhere"):
        _, headers, _ = world.request("GET", path, {"Cookie": cookie})
        assert headers["Cache-Control"] == "no-store", path
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Content-Type-Options"] == "nosniff"
        # No lookup of the hosts a mail's links name (the header's case varies by route).
        prefetch = {k.lower(): v for k, v in headers.items()}["x-dns-prefetch-control"]
        assert prefetch == "off", path
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy or path == "/message/1/raw"


def test_sign_out_ends_the_session(world: World) -> None:
    cookie, csrf = world.session()
    own = f"http://127.0.0.1:{world.port}"
    headers = {"Cookie": cookie, "Origin": own,
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    assert world.request("POST", "/signout", headers, f"csrf={csrf}".encode())[0] == 200
    assert world.request("GET", "/mail", {"Cookie": cookie})[0] == 401


def test_a_session_ends_after_the_idle_time() -> None:
    clock = [1000.0]
    sessions = Sessions(timedelta(minutes=30), monotonic=lambda: clock[0])
    cookie, _ = sessions.create()
    clock[0] += 29 * 60
    assert sessions.get(cookie) is not None  # used: the idle time starts again
    clock[0] += 29 * 60
    assert sessions.get(cookie) is not None
    clock[0] += 31 * 60
    assert sessions.get(cookie) is None
    assert sessions.get(cookie) is None


def test_the_server_listens_on_loopback_only(world: World) -> None:
    bound = {tuple(addr)[:2] for addr in world.server._server.effective_listen}
    assert {host for host, _ in bound} <= {"127.0.0.1", "::1"}
    assert {int(port) for _, port in bound} == {world.port}
    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}
    for address in addresses - {"127.0.0.1", "::1", "127.0.1.1"}:
        with pytest.raises(OSError):
            socket.create_connection((address, world.port), timeout=2).close()
