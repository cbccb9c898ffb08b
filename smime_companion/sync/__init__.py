"""The sync: one IMAP folder into the cache.

- :mod:`.folder`: one pass over a folder (UIDVALIDITY, expunges, flags, then what is new);
- :mod:`.pipeline`: the new messages' bodies fetched, opened and stored on overlapping stages;
- :mod:`.opening`: the opening pool (``core.open`` plus the cache entry, in worker processes);
- :mod:`.protocols`: what the sync needs of the server, the cache, the harvester and the pool.

It imports no IMAP library (:mod:`smime_companion.imap` holds the adapters).
"""
