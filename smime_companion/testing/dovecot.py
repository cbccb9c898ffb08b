"""A real, throwaway Dovecot on loopback, for the IMAP tests and the demo (recipe:
shared/notes/dovecot-for-tests.md).

:class:`Dovecot` writes a config, a users file and a TLS certificate (made with cryptography, for
``localhost`` and ``127.0.0.1``) into its own directory, starts ``dovecot -c CONF`` on two free
loopback ports (plain/STARTTLS and implicit TLS), and stops it by the pid in ``master.pid``.
Messages are delivered either as Maildir files (fast, no IMAP) or by APPEND over IMAP.

It runs as root without systemd: the login process runs as ``dovenull``, the mail belongs to an
unprivileged uid, and ``mail_fsync = never`` keeps it fast. Root is required (Dovecot's master
switches users), and so is Debian's ``dovecot-imapd``: :func:`missing_requirement` says which one
is lacking, in one line, before anything is started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from imapclient import IMAPClient

MAIL_UID = 10000
PASSWORD = "secret-pw"
USERS = ("alice", "bob")

_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/run/state
log_path = {dir}/log/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1000
ssl = yes
ssl_cert = <{dir}/ssl/cert.pem
ssl_key = <{dir}/ssl/key.pem
disable_plaintext_auth = no
# No 2 s delay after a failed login, and no growing penalty for tests that fail logins on purpose.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
auth_mechanisms = {mechanisms}
{passdbs}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={dir}/mail/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = {separator}
{special_use}}}
mail_fsync = never
mail_plugins =
{capability}service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""

_PASSWD_PASSDB = """\
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {dir}/users
}}"""

_OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {dir}/oauth2.conf
}}"""


# As Debian's 15-mailboxes.conf marks them (created by clients, not by the server).
STOCK_SPECIAL_USE = {"Drafts": "\\Drafts", "Sent": "\\Sent", "Sent Messages": "\\Sent",
                     "Junk": "\\Junk", "Trash": "\\Trash"}  # fmt: skip
SEPARATORS = (".", "/")
# Dovecot 2.3's capabilities after login less CONDSTORE and QRESYNC (and the extensions that
# imply them), as an older or simpler server offers.
WITHOUT_CONDSTORE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH "
    "LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ "
    "SPECIAL-USE"
)


def missing_requirement() -> str | None:
    """Why a :class:`Dovecot` cannot run here (one line), or None when it can: it needs root,
    because the master switches to the ``dovecot``/``dovenull`` users and the mail uid, and the
    ``dovecot`` binary (Debian ``dovecot-imapd``)."""
    if os.geteuid() != 0:
        return "Dovecot must be started as root (it switches to its own users); run as root"
    if shutil.which("dovecot") is None:
        return "dovecot is not installed (Debian package dovecot-imapd; scripts/bootstrap adds it)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on right now. Asked for
    one at a time, the kernel may hand out the same free port twice in a row (a Dovecot with
    its IMAP and IMAPS listeners on one port refuses to start): every socket is held until
    all are bound."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def make_tls_certificate(directory: Path) -> Path:
    """A self-signed server certificate for localhost/127.0.0.1; returns the cert path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / "cert.pem"


class Dovecot:
    """One Dovecot instance in a fresh directory under /tmp.

    Not under pytest's tmp_path: its parents are 0700, and Dovecot's auth process (user dovecot)
    must traverse every directory above the users file. :meth:`remove` deletes it.
    ``users`` log in with ``password``; with ``oauth2_introspection_url`` the server also accepts
    XOAUTH2/OAUTHBEARER tokens checked against that endpoint.

    ``separator`` is the hierarchy separator: ``.`` is Dovecot's (and Debian's) stock Maildir++
    layout, where a name with ``/`` is refused; ``/`` is what Gmail, Microsoft 365 and Fastmail
    use. ``special_use`` maps mailbox names to their RFC 6154 flag (Debian's marks by default).
    ``capability`` replaces the capabilities offered after login (:data:`WITHOUT_CONDSTORE`: a
    server without CONDSTORE and QRESYNC)."""

    def __init__(
        self,
        oauth2_introspection_url: str | None = None,
        *,
        users: tuple[str, ...] = USERS,
        password: str = PASSWORD,
        separator: str = "/",
        special_use: dict[str, str] | None = None,
        capability: str | None = None,
    ) -> None:
        if separator not in SEPARATORS:
            raise ValueError(f"separator must be one of {SEPARATORS}")
        self.dir = Path(tempfile.mkdtemp(prefix="smime-dovecot-"))
        self.users = users
        self.password = password
        self.separator = separator
        self.special_use = STOCK_SPECIAL_USE if special_use is None else special_use
        self.capability = capability
        self.port, self.tls_port = free_ports(2)
        self.oauth2_url = oauth2_introspection_url
        self.cert = make_tls_certificate(self.dir / "ssl")
        self.pid: int | None = None
        self._counter = 0
        self._write_config()

    # -- lifecycle -------------------------------------------------------------------------------

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("run", "log", "mail"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # The auth process runs as the dovecot user and must traverse the directory.
        os.chmod(d, 0o755)
        os.chmod(d / "ssl" / "key.pem", 0o600)
        for user in self.users:  # the mail uid cannot create its home under our root-owned dir
            self.maildir(user)
        (d / "users").write_text("".join(f"{u}:{{PLAIN}}{self.password}\n" for u in self.users))
        passdbs = _PASSWD_PASSDB.format(dir=d)
        mechanisms = "plain login"
        if self.oauth2_url:
            (d / "oauth2.conf").write_text(
                f"introspection_mode = post\nintrospection_url = {self.oauth2_url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
            )
            passdbs += "\n" + _OAUTH2_PASSDB.format(dir=d)
            mechanisms += " xoauth2 oauthbearer"
        (d / "dovecot.conf").write_text(
            _CONFIG.format(
                dir=d,
                port=self.port,
                tls_port=self.tls_port,
                uid=MAIL_UID,
                passdbs=passdbs,
                mechanisms=mechanisms,
                separator=self.separator,
                capability=(
                    f"imap_capability = {self.capability}\n" if self.capability is not None else ""
                ),
                special_use="".join(
                    f'  mailbox "{name}" {{\n    special_use = {flag}\n  }}\n'
                    for name, flag in self.special_use.items()
                ),
            )
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections on both ports."""
        # The master daemonizes; its children inherit our stdio, so never give it pipes.
        start_log = self.dir / "log" / "start.log"
        with open(start_log, "ab") as out:
            proc = subprocess.run(
                ["dovecot", "-c", str(self.dir / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=30,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"dovecot failed to start: {start_log.read_text()[-500:]}")
        pid_file = self.dir / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                try:
                    for port in (self.port, self.tls_port):
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    time.sleep(0.05)
                    continue
                self.pid = int(pid_file.read_text().strip())
                return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start; log: {self.log()}")

    def stop(self) -> None:
        """Stop the server by its pid and wait until it is gone and its ports are free."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        # The master daemonized into its own process group (pgid == its pid) with its children;
        # a graceful stop takes it ~2.5 s, so end the whole group of this instance at once.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        # Dovecot refuses to start while master.pid names a process, and an unreaped zombie
        # still counts as one.
        (self.dir / "run" / "master.pid").unlink(missing_ok=True)
        # Its children (imap, auth, login) exit right after the master.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop the server, then start it again on the same ports with the same mail."""
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its directory (config, certificate, mail, log)."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        """Dovecot's log so far (for error messages), or ``<no log>``."""
        path = self.dir / "log" / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else "<no log>"

    # -- mail ------------------------------------------------------------------------------------

    def name(self, *parts: str) -> str:
        """The folder name of ``parts`` nested on this server (``A/B`` or ``A.B``)."""
        return self.separator.join(parts)

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir of ``folder`` (Maildir++: ``INBOX`` is the root, others ``.Name``, a
        nested folder ``.Parent.Child`` whatever the separator)."""
        root = self.dir / "mail" / user / "Maildir"
        path = root if folder == "INBOX" else root / ("." + folder.replace(self.separator, "."))
        for sub in ("new", "cur", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self._chown(self.dir / "mail" / user)
        return path

    def deliver(self, user: str, raw: bytes, folder: str = "INBOX") -> Path:
        """Put ``raw`` into ``folder`` as a Maildir file; Dovecot sees it on the next look."""
        box = self.maildir(user, folder)
        self._counter += 1
        name = f"{time.time_ns()}.M{self._counter}P{os.getpid()}.test,S={len(raw)}"
        tmp = box / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, MAIL_UID, MAIL_UID)
        # Dovecot takes INTERNALDATE from the file's time. Set it from our clock, as a delivery
        # agent's would be: the file system's own stamp would not follow a moved test clock.
        delivered = time.time()
        os.utime(tmp, (delivered, delivered))
        target = box / "new" / name
        os.rename(tmp, target)
        return target

    def _chown(self, top: Path) -> None:
        for root, dirs, files in os.walk(top):
            os.chown(root, MAIL_UID, MAIL_UID)
            for name in dirs + files:
                os.chown(os.path.join(root, name), MAIL_UID, MAIL_UID)

    def client(self, user: str = "alice") -> IMAPClient:
        """A logged-in IMAP connection for the test itself (to APPEND, EXPUNGE, ...)."""
        context = ssl.create_default_context(cafile=str(self.cert))
        imap = IMAPClient(
            "127.0.0.1", port=self.tls_port, ssl=True, ssl_context=context, timeout=10
        )
        imap.login(user, self.password)
        return imap

    def append(self, user: str, raw: bytes, folder: str = "INBOX") -> int:
        """APPEND ``raw`` over IMAP; returns its UID (UIDPLUS)."""
        imap = self.client(user)
        try:
            if folder != "INBOX" and not imap.folder_exists(folder):
                imap.create_folder(folder)
            response = imap.append(folder, raw)
            # b'[APPENDUID <uidvalidity> <uid>] Append completed.'
            return int(response.split(b"]")[0].split()[-1])
        finally:
            imap.logout()

    def expunge(self, user: str, uids: list[int], folder: str = "INBOX") -> None:
        """Delete and expunge messages by UID."""
        imap = self.client(user)
        try:
            imap.select_folder(folder)
            imap.delete_messages(uids)
            imap.uid_expunge(uids)
        finally:
            imap.logout()

    def set_flags(
        self, user: str, uids: list[int], flags: list[bytes], folder: str = "INBOX"
    ) -> None:
        """Add ``flags`` to the messages ``uids`` of ``folder``."""
        imap = self.client(user)
        try:
            imap.select_folder(folder)
            imap.add_flags(uids, flags)
        finally:
            imap.logout()

    def reset_uidvalidity(self, user: str, folder: str, uidvalidity: int) -> None:
        """Make ``folder`` renumber its messages under a new ``uidvalidity`` (as after a server
        rebuild): drop Dovecot's index and UID list, write a fresh UID list. The server must be
        stopped (call :meth:`restart` after)."""
        assert self.pid is None, "stop the server first"
        box = self.maildir(user, folder)
        for path in box.iterdir():
            if path.name.startswith("dovecot"):
                path.unlink() if path.is_file() else shutil.rmtree(path)
        # Move every message back to new/ so Dovecot numbers them afresh.
        for path in (box / "cur").iterdir():
            os.rename(path, box / "new" / path.name.split(":")[0])
        (box / "dovecot-uidlist").write_text(f"3 V{uidvalidity} N1\n")
        self._chown(box)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def running_dovecot(
    oauth2_introspection_url: str | None = None,
    *,
    separator: str = "/",
    capability: str | None = None,
) -> Iterator[Dovecot]:
    """Generator for fixtures: a started server (hierarchy ``separator``, ``capability`` as
    :class:`Dovecot` takes it), stopped and removed after the ``yield``."""
    server = Dovecot(oauth2_introspection_url, separator=separator, capability=capability)
    try:  # a server that failed to start leaves no directory behind either
        server.start()
        yield server
    finally:
        server.remove()
