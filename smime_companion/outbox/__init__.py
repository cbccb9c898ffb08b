"""The outbox: drafts put into an IMAP folder or a local directory are sealed (signed, then
encrypted) and sent exactly once, then filed in Sent.

- :mod:`~smime_companion.outbox.plan` (pure): draft + identities + certificate lookup -> what to do;
- :mod:`~smime_companion.outbox.pipeline`: claim -> seal -> submit -> file -> remove, journaled;
- :mod:`~smime_companion.outbox.protocols`: what the pipeline needs from IMAP, SMTP and disk;
- :mod:`~smime_companion.outbox.localdir` and :mod:`~smime_companion.outbox.watch`: the local
  directory source and its watchdog watcher;
- :mod:`~smime_companion.outbox.service`: one locked pass for one account.
"""
