"""IMAP adapters, the only modules (with the test server's ``testing.dovecot``) importing
imapclient or imaplib:

- :mod:`.session`: connect, TLS, log in, and run each command within its limits;
- :mod:`.mailbox`: the sync's read-only :class:`~smime_companion.sync.protocols.Mailbox`;
- :mod:`.outbox_source`: the outbox's drafts, Sent folder and notices;
- :mod:`.responses`: the pure FETCH reader; :mod:`.structure`: pure helpers on IMAP values.
"""
