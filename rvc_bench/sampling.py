"""A byte counter sampled in a thread, for counters with no peak of their own (torch's MPS allocations; the RSS
where the OS keeps no high-water mark)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class PeakSampler:
    """Reads `read()` every `period_s` between start() and stop(); stop() returns the largest value seen."""

    def __init__(self, read: Callable[[], int], period_s: float):
        self.read, self.period, self.peak = read, period_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.peak = self.read()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.period)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.read())
