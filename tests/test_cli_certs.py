"""``smime-companion certs ...`` and ``identity ...`` as a user runs them: a config file, the
cache key in an environment variable, certificates from the test PKI and openssl-signed mail."""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from smime_companion.cli import main
from smime_companion.config import parse_config
from smime_companion.core.certs import fingerprint_sha256
from smime_companion.core.open import open_message
from smime_companion.errors import ConfigError
from smime_companion.harvest import CertHarvester
from smime_companion.store.certstore import CertStore, Sighting
from tests.conftest import load_cert
from tests.peers import split_message
from tests.test_certstore import issue_certificate
from tests.tools import mime_message, run

if TYPE_CHECKING:
    from smime_companion.testing.pki import TestPki

KEY = "cli certs key"


@pytest.fixture
def config(tmp_path: Path, pki: TestPki, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "[identity]\n"
        f'trust_anchors = ["{pki.root}"]\n'
        "system_anchors = false\n"
        "[cache]\n"
        f'path = "{tmp_path / "data"}"\n'
        'key_env = "TEST_CACHE_KEY"\n'
        "[certificates]\n"
        'revocation = "soft"\n'
        'tofu = ["example.net"]\n'
    )
    monkeypatch.setenv("TEST_CACHE_KEY", KEY)
    monkeypatch.setenv("TEST_P12_PASSWORD", "test")
    return path


def cli(
    config: Path, capsys: pytest.CaptureFixture[str], *args: str | Path
) -> tuple[int, str, str]:
    code = main([*map(str, args), "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def _listed(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code, out, _ = cli(config, capsys, "certs", "list", "--json")
    assert code == 0
    return list(json.loads(out))


def _harvest_openssl_mail(config: Path, pki: TestPki, now: dt.datetime) -> None:
    outer, entity = split_message(mime_message(sender="alice@example.org"))
    signed = run(
        ["openssl", "cms", "-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"),
         "-certfile", pki.intermediate],
        stdin=entity,
    )  # fmt: skip
    result = open_message(
        b"\r\n".join(outer) + b"\r\n" + signed, anchors=[load_cert(pki.root)], at=now
    )
    with CertStore.open(config.parent / "data", KEY) as store:
        CertHarvester(store).harvest(result, "<test@example.org>", now)


def test_certs_list_json_gives_the_documented_fields_for_harvested_mail(
    config: Path, pki: TestPki, now: dt.datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    _harvest_openssl_mail(config, pki, now)
    (entry,) = _listed(config, capsys)
    alice = load_cert(pki.cert("alice"))
    assert entry["address"] == "alice@example.org"
    assert entry["fingerprint"] == fingerprint_sha256(alice)
    assert entry["not_before"] == alice.not_valid_before_utc.isoformat()
    assert entry["not_after"] == alice.not_valid_after_utc.isoformat()
    assert entry["trust"] == "anchor"
    assert "aes-256-cbc" in entry["capabilities"]  # type: ignore[operator]
    assert entry["source"] == "<test@example.org>"
    code, out, _ = cli(config, capsys, "certs", "list")
    assert code == 0 and out.startswith("alice@example.org") and "anchor" in out


def test_certs_import_trusts_a_chained_certificate_and_keeps_another_untrusted_with_a_hint(
    config: Path, pki: TestPki, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(config, capsys, "certs", "import", pki.chain("bob"))
    assert code == 0 and "anchor" in out
    code, out, _ = cli(config, capsys, "certs", "import", pki.cert("rogue"))
    assert code == 0 and "untrusted" in out and "certs trust" in out
    trust = {e["address"]: e["trust"] for e in _listed(config, capsys)}
    assert trust == {"bob@example.org": "anchor", "rogue@example.org": "untrusted"}
    assert {e["source"] for e in _listed(config, capsys)} == {"import"}


def test_a_file_that_is_not_a_certificate_is_one_line_and_changes_nothing(
    config: Path, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(config, capsys, "certs", "import", pki.cert("bob"))
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    before = _listed(config, capsys)
    code, out, err = cli(config, capsys, "certs", "import", junk)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not a PEM or DER certificate" in err
    code, _, err = cli(config, capsys, "certs", "import", pki.root)
    assert code == 2 and "no email certificate" in err
    assert _listed(config, capsys) == before


def test_a_changed_key_is_exported_only_after_certs_trust(
    config: Path, pki: TestPki, now: dt.datetime, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    first, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    second, _ = issue_certificate(pki, "pat@example.net", now, self_signed=True)
    with CertStore.open(config.parent / "data", KEY) as store:
        tofu = frozenset({"pat@example.net"})
        store.record(Sighting(first, "<1@x>", now, anchored=False, tofu_addresses=tofu))
        (changed,) = store.record(
            Sighting(second, "<2@x>", now, anchored=False, tofu_addresses=tofu)
        )
    assert {e["trust"] for e in _listed(config, capsys)} == {"tofu", "key-changed"}
    out_file = tmp_path / "pat.pem"
    assert cli(config, capsys, "certs", "export", "pat@example.net", "-o", out_file)[0] == 0
    assert x509.load_pem_x509_certificate(out_file.read_bytes()) == first
    code, out, _ = cli(config, capsys, "certs", "show", "pat@example.net")
    assert code == 0 and f"encryption: {changed.fingerprint}" not in out
    assert cli(config, capsys, "certs", "trust", changed.fingerprint[:10])[0] == 0
    assert cli(config, capsys, "certs", "export", "pat@example.net", "-o", out_file)[0] == 0
    assert x509.load_pem_x509_certificate(out_file.read_bytes()) == second
    code, out, _ = cli(config, capsys, "certs", "show", "pat@example.net")
    assert f"encryption: {changed.fingerprint}" in out


def test_certs_export_without_a_usable_certificate_exits_1_with_the_reason(
    config: Path, pki: TestPki, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(config, capsys, "certs", "import", pki.cert("rogue"))
    code, out, err = cli(config, capsys, "certs", "export", "rogue@example.org")
    assert code == 1 and out == "" and "not trusted" in err
    code, _, err = cli(config, capsys, "certs", "export", "nobody@example.org")
    assert code == 1 and "no certificate known" in err


def test_certs_forget_and_show_by_fingerprint(
    config: Path, pki: TestPki, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(config, capsys, "certs", "import", pki.chain("carol"))
    (entry,) = _listed(config, capsys)
    fingerprint = str(entry["fingerprint"])
    code, out, _ = cli(config, capsys, "certs", "show", fingerprint[:12], "--json")
    assert code == 0 and json.loads(out)["records"][0]["address"] == "carol@example.org"
    assert cli(config, capsys, "certs", "forget", fingerprint)[0] == 0
    assert _listed(config, capsys) == []
    code, _, err = cli(config, capsys, "certs", "forget", fingerprint)
    assert code == 2 and "no certificate with fingerprint" in err


def test_identity_import_keeps_the_old_key_and_marks_the_newest_current(
    config: Path, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p12 = ("--password-env", "TEST_P12_PASSWORD")
    assert cli(config, capsys, "identity", "import", pki.p12("alice"), *p12)[0] == 0
    pem = tmp_path / "bob.pem"
    pem.write_bytes(pki.key("bob").read_bytes() + pki.chain("bob").read_bytes())
    code, out, _ = cli(config, capsys, "identity", "import", pem)
    assert code == 0 and "bob@example.org" in out
    code, out, _ = cli(config, capsys, "identity", "list", "--json")
    listed = json.loads(out)
    assert [(i["addresses"], i["current"]) for i in listed] == [
        (["bob@example.org"], True),
        (["alice@example.org"], False),
    ]


@pytest.mark.parametrize(
    "content, password, problem",
    [
        (b"\x30\x82\x01\x00garbage", "test", "not a PKCS#12 file"),
        (None, "wrong", "wrong PKCS#12 password"),
    ],
    ids=["corrupt", "wrong-password"],
)
def test_a_bad_pkcs12_is_one_line_and_leaves_the_identities_unchanged(
    config: Path, pki: TestPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, content: bytes | None, password: str, problem: str,
) -> None:  # fmt: skip
    cli(config, capsys, "identity", "import", pki.p12("alice"), "--password-env",
        "TEST_P12_PASSWORD")  # fmt: skip
    bad = tmp_path / "bad.p12"
    bad.write_bytes(content if content is not None else pki.p12("bob").read_bytes())
    monkeypatch.setenv("BAD_PASSWORD", password)
    code, out, err = cli(config, capsys, "identity", "import", bad, "--password-env",
                         "BAD_PASSWORD")  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1 and problem in err
    code, out, _ = cli(config, capsys, "identity", "list", "--json")
    assert [i["addresses"] for i in json.loads(out)] == [["alice@example.org"]]


def test_a_bad_certificates_policy_in_the_config_names_file_line_and_key() -> None:
    with pytest.raises(ConfigError, match=r"<config>:2: certificates.revocation: must be one of"):
        parse_config('[certificates]\nrevocation = "strict"\n')
    with pytest.raises(ConfigError, match="certificates.tofu"):
        parse_config("[certificates]\ntofu = [1]\n")
    assert parse_config("").certificates.revocation == "soft"


def test_the_daemon_gets_the_config_identities_then_the_imported_ones_without_duplicates(
    config: Path, pki: TestPki, capsys: pytest.CaptureFixture[str]
) -> None:
    from smime_companion import runtime
    from smime_companion.config import load_config

    text = config.read_text().replace(
        "[identity]\n",
        f'[identity]\np12 = "{pki.p12("alice")}"\np12_password_env = "TEST_P12_PASSWORD"\n',
    )
    config.write_text(text)
    for user in ("bob", "alice"):
        cli(config, capsys, "identity", "import", pki.p12(user), "--password-env",
            "TEST_P12_PASSWORD")  # fmt: skip
    loaded = load_config(config)
    with runtime.open_certstore(loaded) as store:
        merged = runtime.identities_with_store(loaded, store)
    assert [i.certificate for i in merged] == [
        load_cert(pki.cert("alice")),
        load_cert(pki.cert("bob")),
    ]


@pytest.mark.parametrize("policy, usable", [("soft", True), ("hard", False), ("off", True)])
def test_the_outbox_lookup_applies_the_configured_revocation_policy(
    config: Path, pki: TestPki, now: dt.datetime, policy: str, usable: bool
) -> None:
    from smime_companion import runtime
    from smime_companion.config import load_config
    from smime_companion.core.selection import Selected

    config.write_text(config.read_text().replace('revocation = "soft"', f'revocation = "{policy}"'))
    with socket.socket() as sock:  # a loopback port nobody listens on: the responder is down
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cert, _ = issue_certificate(pki, "sam@example.org", now, ocsp_url=down)
    loaded = load_config(config)
    with runtime.open_certstore(loaded) as store:
        store.record(
            Sighting(cert, "<m@x>", now, anchored=True, chain=(load_cert(pki.intermediate),))
        )
        selection = runtime.certificate_lookup(loaded, store).select("sam@example.org", now)
        (record,) = store.records("sam@example.org")
    assert isinstance(selection, Selected) is usable
    assert record.revocation == ("not-checked" if policy == "off" else "unavailable")
