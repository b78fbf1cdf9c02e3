"""Prometheus metrics of one server (its own registry: two apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds: from a millisecond prediction to a minutes-long deletion on a large run
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Requests by route and status, latency histograms, queue depth, the served model's certificate."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("miniunlearn_http_requests_total", "HTTP requests answered",
                                     ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram("miniunlearn_http_request_duration_seconds", "time to answer an HTTP request",
                                      ["method", "route"], buckets=_BUCKETS, registry=r)
        self.deletions = Counter("miniunlearn_deletions_total", "deletion requests by final status (and accepted)",
                                 ["status"], registry=r)
        self.deletion_seconds = Histogram("miniunlearn_deletion_seconds", "time from a deletion's receipt to done",
                                          buckets=_BUCKETS, registry=r)
        self.solve_seconds = Histogram("miniunlearn_solve_seconds", "time of one certified solve (a batch)",
                                       buckets=_BUCKETS, registry=r)
        self.batch_size = Histogram("miniunlearn_solve_batch_requests", "requests served by one solve",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024), registry=r)
        self.queue_depth = Gauge("miniunlearn_queue_depth", "deletion requests queued or running", registry=r)
        self.certificate = Gauge("miniunlearn_served_certificate",
                                 "certified bound on ||w - w_R|| of the served model (0: exact)", registry=r)
        self.certified_relative = Gauge("miniunlearn_served_certified_relative",
                                        "served certificate / ||w - w_T||", registry=r)
        self.forgotten = Gauge("miniunlearn_served_rows_forgotten", "rows the served model has forgotten since "
                               "its base", registry=r)

    def observe_model(self, served) -> None:
        self.certificate.set(float(served.certificate or 0.0))
        self.certified_relative.set(float(served.certified_relative or 0.0))
        self.forgotten.set(served.n_forgotten)

    def render(self, queue_depth: int) -> bytes:
        self.queue_depth.set(queue_depth)
        return generate_latest(self.registry)
