"""The reader: a local web mailbox over the encrypted cache and the outbox, on loopback only.

``context`` holds what the pages need (stores opened per thread, the accounts, the outbox
kick); ``security`` the sign-in tokens, sessions and request checks; ``html_mail`` the HTML
sanitiser; ``message_view`` and ``verdict_words`` what a message page shows; ``compose`` drafts,
replies and queueing (shared with the ``compose`` command); ``app`` and the ``routes_*`` modules
the Flask application (the only modules importing Flask); ``server`` serves it with waitress.
See docs/reader.md for the threat model, the routes and the settings.
"""
