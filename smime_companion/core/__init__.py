"""The pure S/MIME core: bytes, keys and a time in; values out.

Nothing in this package reads files, opens sockets, reads the clock or touches a database.
Only the standard library, cryptography, asn1crypto and ``smime_companion.errors`` are imported.
"""
