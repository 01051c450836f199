"""Round-trip estimate and retransmission timeout (RFC 6298), shared by every exchange.

A fixed 2 s timeout is ten round trips on a 200 ms link and too short on a congested one.
One ``Rtt`` lives as long as the link (every report and every block feeds it), so the second
exchange already uses the measured figure; ``initial_ms`` is only the first guess. Integer
milliseconds, no floats (MicroPython ports without them still work).

Karn's rule: only an answer to a request sent once is a sample (an answer to a retransmitted
one could belong to either try). ``backoff()`` doubles the timeout after a timeout, bounded by
``max_ms``; the doubling stays while the peer is silent. Any answer (``answered()``), sampled
or not, ends it: RFC 6298 keeps it until the next valid sample, but a CoAP exchange has no
timestamps to disambiguate with, and on a lossy link a run of retransmitted exchanges would
then ratchet the timeout up by a doubling each (measured: 100 ms -> 12.8 s in four exchanges
at 20 % loss). CoCoA (RFC 9177's sibling draft) lets such answers count as weak samples; this
is the simpler half of it.
"""

G_MS = 10  # clock granularity term of RFC 6298 (2.4)


class Rtt:
    def __init__(self, initial_ms=2000, min_ms=100, max_ms=32000):
        self.min_ms = min(min_ms, initial_ms)  # a first guess below the floor: a known fast link
        self.max_ms = max_ms
        self.srtt = None  # smoothed round trip, ms (None: no sample yet)
        self.rttvar = 0
        self.min_rtt = None  # smallest sample seen: the link's own delay, without queues
        self.samples = 0
        self.rto = self._clamp(initial_ms)

    def _clamp(self, ms):
        return max(self.min_ms, min(self.max_ms, int(ms)))

    def sample(self, ms):
        """One measured round trip (request sent once, its answer received)."""
        ms = max(0, int(ms))
        if self.srtt is None:
            self.srtt = ms
            self.rttvar = ms // 2
        else:
            d = self.srtt - ms
            self.rttvar = (3 * self.rttvar + (d if d > 0 else -d)) // 4
            self.srtt = (7 * self.srtt + ms) // 8
        if self.min_rtt is None or ms < self.min_rtt:
            self.min_rtt = ms
        self.samples += 1
        self.rto = self._clamp(self.srtt + max(G_MS, 4 * self.rttvar))

    def answered(self):
        """The peer answered (maybe a retransmitted request): the back-off is over."""
        if self.srtt is not None:
            self.rto = self._clamp(self.srtt + max(G_MS, 4 * self.rttvar))

    def backoff(self):
        """A timeout expired: double the timeout until the next sample."""
        self.rto = self._clamp(self.rto * 2)
