"""Everything on disk that smime-companion keeps: the encrypted SQLite database (``db``), the
message cache with its search index and folder sync state (``cache``), and its query language
(``query``). The only package that imports a SQLite binding."""

from smime_companion.store.cache import Cache, FolderState, MessageSummary, StoredAttachment

__all__ = ["Cache", "FolderState", "MessageSummary", "StoredAttachment"]
