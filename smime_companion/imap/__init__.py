"""IMAP: the client adapter (:mod:`.client`, the only module importing imapclient) and the
per-folder sync logic (:mod:`.sync`, which depends only on the adapter's ``Mailbox`` protocol,
the cache and ``core.open``)."""
