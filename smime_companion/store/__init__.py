"""Everything on disk that smime-companion keeps: the encrypted SQLite database (``db``), the
message cache with its search index and folder sync state (``cache``, ``cache_reading``,
``cache_schema``), its query language (``query``), the certificate store (``certstore``) and the
outbox journal (``journal``). The only package that imports a SQLite binding.

The package imports nothing itself: ``store.journal`` does not load the message cache, and a
command that only searches does not load the certificate store. ``from smime_companion.store
import Cache`` still works (resolved on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smime_companion.store.cache import Cache, FolderState, MessageSummary, StoredAttachment

__all__ = ["Cache", "FolderState", "MessageSummary", "StoredAttachment"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("smime_companion.store.cache"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
