"""The outbox: drafts put into an IMAP folder or a local directory are sealed (signed, then
encrypted) and sent exactly once, then filed in Sent.

- :mod:`~smime_companion.outbox.plan` (pure): draft + identities + certificate lookup -> what to do;
- :mod:`~smime_companion.outbox.pipeline`: one pass over one outbox, under the outbox lock:
  claim -> seal -> submit -> file -> remove, journaled; :class:`PassReport` says what it did;
- :mod:`~smime_companion.outbox.notices`: everything the outbox tells the user, in one place;
- :mod:`~smime_companion.outbox.protocols`: what the pipeline needs from IMAP, SMTP and disk;
- :mod:`~smime_companion.outbox.localdir` and :mod:`~smime_companion.outbox.watch`: the local
  directory source and its watchdog watcher; :mod:`~smime_companion.outbox.journal_drafts`:
  the drafts the reader queued, as a source.

``runtime.process_outbox`` builds the sources of one account from the config and runs a pass over
each: that is what ``run``, ``outbox run`` and the reader's Send call.
"""
