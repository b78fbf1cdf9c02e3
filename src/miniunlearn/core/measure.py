"""Wall time, CPU time and peak resident memory of a block of work."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Measurement:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0

    def as_dict(self) -> dict:
        return {"time_s": self.wall_s, "cpu_time_s": self.cpu_s, "peak_rss_bytes": self.peak_rss_bytes}


@contextlib.contextmanager
def measure(interval_s: float = 0.01):
    """Measure the enclosed block; peak RSS is sampled every ``interval_s`` by a background thread.

    The peak is the highest RSS seen while the block ran (the whole process's, since torch's
    allocations are invisible to tracemalloc).
    """
    result = Measurement()
    stop = threading.Event()
    peak = [current_rss_bytes()]

    def sample():
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], current_rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        result.wall_s = time.perf_counter() - wall0
        result.cpu_s = time.process_time() - cpu0
        stop.set()
        sampler.join()
        result.peak_rss_bytes = max(peak[0], current_rss_bytes())
