"""``burst.Window``'s texts for ``why`` (and its argument errors), by number: kept out of
burst.py because they are needed only when a download ends in error, and as string constants
of a loaded module they held ~0.7 KiB of heap for every download (64-bit unix port)."""

WHY = (
    "bad size, szx or window",  # 0
    "resume offset must be a block boundary inside the image",  # 1
    "nothing in flight",  # 2
    "no answer after %d timeouts",  # 3
    "block %d answered %s",  # 4
    "block %d answered with Block2 %r",  # 5
    "ETag changed at block %d: the image changed",  # 6
    "Size2 %d, expected %d",  # 7
    "block %d has %d bytes",  # 8
    "undecodable data",  # 9
)
