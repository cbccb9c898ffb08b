"""smime-companion: S/MIME for mail clients that lack it."""

__version__ = "0.1.0"
