"""``JsUdpLink``: the ``Link`` of device/coap.py over real UDP under the MicroPython WebAssembly
port, through tests/wasm/udpbridge.mjs (register it as JS module "udpbridge": ``run_mpy(...,
js={"udpbridge": BRIDGE})``). Same behaviour as device/udp.UdpLink: random first message id,
fresh tokens, one ``coap.Exchange`` per request, real wall-clock retransmission timing."""

import random
import time

import udpbridge
from device import coap


class JsUdpLink:
    def __init__(self, host, port, timeout_scale=1.0, max_wait_ms=None):
        self.id = udpbridge.open(host, port)
        self.ack_timeout_ms = int(2000 * timeout_scale)
        self.max_wait_ms = max_wait_ms
        self.mid = random.getrandbits(16)
        self._now = 0
        self._last = time.ticks_ms()

    def clock(self):
        t = time.ticks_ms()
        self._now += time.ticks_diff(t, self._last)
        self._last = t
        return self._now

    def _send(self, data):
        udpbridge.send(self.id, data.hex())

    def _recv(self, wait_ms):
        h = udpbridge.recv(self.id, int(wait_ms))
        return None if h is None else bytes.fromhex(h)

    def request(self, req):
        self.mid = (self.mid + 1) & 0xFFFF
        token = bytes(random.getrandbits(8) for _ in range(4))
        ex = coap.Exchange(req, self.mid, token, self.clock(), lambda: random.random(),
                           ack_timeout_ms=self.ack_timeout_ms, max_wait_ms=self.max_wait_ms)
        return coap.drive(ex, self._send, self._recv, self.clock)

    def close(self):
        udpbridge.close(self.id)
