"""Prometheus metrics of one gateway process (``GET /metrics`` on the ``--http`` bind).

Counters live here as module globals, so the other modules count in one-line hooks without an
object handed around. The per-datagram ones (reports, blocks, bytes) are plain integers read at
scrape time: prometheus_client's ``Counter.inc`` takes a lock (0.7 µs measured, 1.9 µs for a
block's two counters) where an integer increment costs about 0.1 µs. Gauges that are facts of the store (jobs per state, campaigns per state) are read
from SQLite at scrape time instead of being kept in step by hand. The series are listed for
Grafana in docs/operations.md ("Metrics and health").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: one registry per process, not prometheus_client's global one (no import-time surprises)
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, cpu, open fds

STORE_SECONDS = Histogram("fota_store_transaction_seconds", "Wall time of one store "
                          "transaction, BEGIN to COMMIT (includes the fsync).",
                          buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5),
                          registry=REGISTRY)
STORE_BATCHES = Counter("fota_store_batches", "Batches of reports by how they ended (fast: "
                        "committed at the first try; careful: rolled back and committed one "
                        "savepoint per report; failed: not committed).", ["how"],
                        registry=REGISTRY)
EVENTS = Counter("fota_events", "Events written to the event log, by kind.", ["kind"],
                 registry=REGISTRY)
WEBHOOKS = Counter("fota_webhook_deliveries", "Webhook POSTs by outcome (delivered: 2xx; "
                   "retry: failed, will retry; dropped: gave up or queue full).",
                   ["outcome"], registry=REGISTRY)
SSE_CLIENTS = Gauge("fota_dashboard_streams", "Open Server-Sent Event streams of the "
                    "dashboard.", registry=REGISTRY)


class _Hot:
    __slots__ = ("reports", "blocks", "block_bytes")

    def __init__(self) -> None:
        self.reports = self.blocks = self.block_bytes = 0


HOT = _Hot()


def block_served(nbytes: int) -> None:
    """Hook for both firmware paths: one block of ``nbytes`` payload went out."""
    HOT.blocks += 1
    HOT.block_bytes += nbytes


def report_applied() -> None:
    """Hook of the device API: the fleet accepted one report."""
    HOT.reports += 1


class _HotCollector(Collector):
    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily("fota_reports", "Device reports applied (accepted by the "
                                  "fleet).", value=HOT.reports)
        yield CounterMetricFamily("fota_blocks_served", "Firmware Block2 responses sent.",
                                  value=HOT.blocks)
        yield CounterMetricFamily("fota_block_bytes", "Firmware payload bytes sent in Block2 "
                                  "responses.", value=HOT.block_bytes)


REGISTRY.register(_HotCollector())


def on_event(ev: dict[str, Any]) -> None:
    """Event bus listener: count committed events by kind."""
    EVENTS.labels(ev["kind"]).inc()


class StoreCollector(Collector):
    """Read at scrape time: jobs per state, campaigns per state, devices, and the device
    port's own counters (``DeviceEndpoint.counters``: plain integers, so its hot path has no
    hook)."""

    def __init__(self, counts: Callable[[], dict[str, dict[str, int]]],
                 port: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.counts = counts
        self.port = port

    def collect(self) -> Iterator[Any]:
        c = self.counts()
        jobs = GaugeMetricFamily("fota_jobs", "Jobs by state, over all campaigns.",
                                 labels=["state"])
        for state, n in sorted(c["jobs"].items()):
            jobs.add_metric([state], n)
        yield jobs
        camps = GaugeMetricFamily("fota_campaigns", "Campaigns by state.", labels=["state"])
        for state, n in sorted(c["campaigns"].items()):
            camps.add_metric([state], n)
        yield camps
        yield GaugeMetricFamily("fota_devices", "Devices known to the gateway.",
                                value=c["devices"])
        dropped = CounterMetricFamily("fota_rate_limited_datagrams", "Datagrams the device "
                                      "bind's rate limits dropped, by budget (host: one source "
                                      "address, net: its prefix, total: all sources).",
                                      labels=["budget"])
        port = self.port()
        for budget, n in sorted(port["dropped"].items()):
            dropped.add_metric([budget], n)
        yield dropped
        events = CounterMetricFamily("fota_device_port_events", "Device-port answers that are "
                                     "not served blocks or reports, by kind (echo_challenge: "
                                     "4.01 + Echo to an unverified address; report_replay: a "
                                     "retransmitted report answered from the reply cache; "
                                     "observe_refused: an observation over a cap; "
                                     "handler_failure: a datagram whose handling raised).",
                                     labels=["kind"])
        for kind, n in sorted(port["events"].items()):
            events.add_metric([kind], n)
        yield events


def bind_store(counts: Callable[[], dict[str, dict[str, int]]],
               port: Callable[[], dict[str, dict[str, int]]]) -> Collector:
    """Register the scrape-time collector (once per gateway run); returns it for unregister."""
    collector = StoreCollector(counts, port)
    REGISTRY.register(collector)
    return collector
