"""The codec of the raw messages and decrypted contents the cache keeps: Zstandard frames,
compressed before SQLite encrypts the page (ciphertext does not compress; plaintext mail does,
to a third of its size or less, and even base64 S/MIME bodies lose about a quarter).

A row's ``compressed`` column says whether its ``raw`` and ``content`` are frames (caches from
before migration 4 hold them as they came until :meth:`Cache.compress_pending
<smime_companion.store.cache.Cache.compress_pending>` has rewritten them). Every frame records
its content size, which bounds what decompressing it may allocate.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from smime_companion.errors import CacheError

if TYPE_CHECKING:
    import zstandard

# Level 3 (zstd's default): about 300 MB/s on this machine's cores for mail, within a few per
# cent of level 9's size on the sync bench's mix; the storing thread pays for it.
LEVEL = 3
# Nothing the cache stores is larger than the sync accepts (limits.max_message_bytes), far below.
MAX_FRAME_CONTENT = 1 << 31

_local = threading.local()  # zstd contexts are not thread-safe; one pair per thread


def _contexts() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_local, "pair", None)
    if pair is None:
        # Imported here: a search that only lists messages never decompresses one.
        import zstandard

        pair = (zstandard.ZstdCompressor(level=LEVEL), zstandard.ZstdDecompressor())
        _local.pair = pair
    return pair


def compress(data: bytes) -> bytes:
    """``data`` as one Zstandard frame that records its size."""
    return _contexts()[0].compress(data)


def decompress(frame: bytes) -> bytes:
    """The bytes of ``frame``. Raises :class:`CacheError` when it is not a whole frame of ours
    (a damaged row): what it would hold is never guessed."""
    import zstandard

    try:
        size = zstandard.frame_content_size(frame)
        if size < 0 or size > MAX_FRAME_CONTENT:
            raise zstandard.ZstdError("frame without a recorded content size")
        return _contexts()[1].decompress(frame, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise CacheError(f"a cached message is damaged (its stored bytes: {exc})") from None
