"""A/B slots on the OTA app partitions of an ESP32 (``esp32.Partition``): the interface of
``slots.py``, in its own module so that boards with file slots never load it (heap)."""

from .slots import SlotError

SECTOR = 4096


class Esp32Partitions:
    """OTA app partitions of an ESP32 (``esp32.Partition``), or an object with its API."""

    def __init__(self, partition_cls=None):
        if partition_cls is None:
            import esp32

            partition_cls = esp32.Partition
        self.P = partition_cls
        self._sector = bytearray(SECTOR)  # the one write buffer: a sector is the erase unit
        self._fill = 0
        self._block = 0  # sector number the buffer holds
        self._erased = 0  # write_at: sectors below this one are erased since open
        self._dirty = False  # the buffer holds bytes not yet on flash
        self._part = None

    def _label(self, part):
        return part.info()[4]

    def _running(self):
        return self.P(self.P.RUNNING)

    def boot(self):
        return self.running()  # the ESP-IDF bootloader already chose

    def running(self):
        return self._label(self._running())

    def _next(self):
        return self._running().get_next_update()

    def inactive(self):
        return self._label(self._next())

    def next_boot(self):
        return self._label(self.P(self.P.BOOT))

    def capacity(self):
        return self._next().info()[3]

    def open(self, size, offset=0):
        if size > self.capacity():
            raise SlotError("image of %d bytes does not fit partition of %d" % (size, self.capacity()))
        self._part = self._next()
        self._block = offset // SECTOR
        self._fill = offset % SECTOR
        self._erased = self._block
        if self._fill:
            # Resuming inside a sector: keep its durable head, the sector is rewritten whole
            # (at once, for write_at: what lies after the head may be half written).
            mv = memoryview(self._sector)
            self._part.readblocks(self._block, mv[: self._fill], 0)
            self._part.ioctl(6, self._block)
            self._part.writeblocks(self._block, mv[: self._fill], 0)
            self._erased = self._block + 1

    def write(self, data):
        mv = memoryview(data)
        n = len(mv)
        i = 0
        while i < n:
            take = min(SECTOR - self._fill, n - i)
            self._sector[self._fill : self._fill + take] = mv[i : i + take]
            self._fill += take
            self._dirty = True
            i += take
            if self._fill == SECTOR:
                self._flush()
                self._block += 1
                self._fill = 0

    def write_at(self, offset, data):
        """Write ``data`` at ``offset`` straight to flash: each sector is erased when first
        touched after ``open`` (offsets only grow by a window, so erased-up-to is enough)."""
        mv = memoryview(data)
        n = len(mv)
        i = 0
        while i < n:
            block, off = divmod(offset + i, SECTOR)
            take = min(SECTOR - off, n - i)
            while self._erased <= block:
                self._part.ioctl(6, self._erased)
                self._erased += 1
            self._part.writeblocks(block, mv[i : i + take], off)
            i += take

    def _flush(self):
        if self._fill < SECTOR:
            for j in range(self._fill, SECTOR):
                self._sector[j] = 0xFF
        self._part.ioctl(6, self._block)
        self._part.writeblocks(self._block, self._sector, 0)
        self._dirty = False

    def sync(self):
        # A partial sector is written padded and kept in the buffer: filling it later rewrites
        # the whole sector (one more erase of it, only when a sync fell inside it).
        if self._part is not None and self._fill and self._dirty:
            self._flush()

    def close(self):
        self.sync()
        self._part = None

    def read_running(self, offset, buf):
        """The running partition (the base of a delta)."""
        return self._read(self._running(), offset, buf)

    def readinto(self, offset, buf):
        return self._read(self._next(), offset, buf)

    def _read(self, part, offset, buf):
        size = part.info()[3]
        n = max(0, min(len(buf), size - offset))
        mv = memoryview(buf)[:n]
        block, off = offset // SECTOR, offset % SECTOR
        # readblocks with an offset may cross sector ends on the real API; do it per sector
        done = 0
        while done < n:
            take = min(SECTOR - off, n - done)
            part.readblocks(block, mv[done : done + take], off)
            done += take
            block += 1
            off = 0
        return n

    def set_pending(self):
        self.close()
        self._next().set_boot()

    def confirm(self):
        self.P.mark_app_valid_cancel_rollback()

    def rollback(self):
        # With two OTA slots the "next update" partition holds the previous image.
        self._next().set_boot()
