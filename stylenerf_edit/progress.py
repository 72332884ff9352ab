"""Progress of long runs, on a terminal or not.

On a terminal a :class:`Progress` is a tqdm bar. Anywhere else (a log file, CI, ``nohup``) tqdm would write a
carriage-return-separated update many times a second into one endless line, or nothing at all; there it writes
one plain line at most every ``interval`` seconds instead, and at least that often while the run lasts (a
background timer, so a slow step cannot silence it)::

    inverting: 120/600 steps (20 %), photo b.png step 20/300, 1.5 min elapsed, about 6.0 min left

Lines that must stay (a photo finished or failed) go through :meth:`Progress.write` in both cases.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

DEFAULT_INTERVAL = 30.0     # seconds between plain progress lines


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:           # a closed stream
        return False


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Progress toward ``total`` units: a bar on a terminal, periodic plain lines elsewhere, nothing at all when
    ``enabled`` is False.

    Args:
        total: units of work (steps, photos, samples).
        desc: what is running, the start of every line.
        unit: the unit's name, singular.
        stream: where to write (default stderr).
        interval: seconds between plain lines.
        terminal: force the display (default: whether ``stream`` is a terminal).
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(self, total: float, desc: str, unit: str = "step", *, stream: TextIO | None = None,
                 enabled: bool = True, interval: float = DEFAULT_INTERVAL, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.enabled, self.interval, self.clock = enabled, interval, clock
        self.n, self.status = 0.0, ""
        self.start = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        self._timer: threading.Thread | None = None
        if not enabled:
            return
        if is_terminal(self.stream) if terminal is None else terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)
        elif interval > 0:
            self._timer = threading.Thread(target=self._tick, name=f"progress-{desc}", daemon=True)
            self._timer.start()

    @property
    def total(self) -> float:
        return self._total

    @total.setter
    def total(self, value: float) -> None:
        """The work can be known only after a first pass (photos that load)."""
        with self._lock:
            self._total = value
            if self._bar is not None:
                self._bar.total = value
                self._bar.refresh()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1.0) -> None:
        self.set(self.n + n)

    def set(self, n: float) -> None:
        """Set the units done (fractions allowed: a photo part-way through its steps)."""
        with self._lock:
            if self._bar is not None:
                delta = n - self._bar.n
                self._bar.update(int(delta) if float(delta).is_integer() else delta)   # "2/4", not "2.0/4"
            self.n = n

    def set_status(self, text: str) -> None:
        """What is being worked on now, e.g. ``photo b.png step 20/300``."""
        with self._lock:
            self.status = text
            if self._bar is not None:
                self._bar.set_postfix_str(text, refresh=False)

    def write(self, line: str, stream: TextIO | None = None) -> None:
        """A line that stays (on ``stream``, default the display's), above the bar on a terminal."""
        if not self.enabled:
            return
        with self._lock:
            if self._bar is not None:
                self._bar.write(line, file=stream or self.stream)
            else:
                print(line, file=stream or self.stream, flush=True)

    def line(self) -> str:
        """The plain progress line for now."""
        elapsed = self.clock() - self.start
        unit = self.unit if self.total == 1 else f"{self.unit}s"
        done = f"{self.n:.0f}/{self.total:.0f} {unit}"
        parts = [f"{self.desc}: {done}" + (f" ({100 * self.n / self.total:.0f} %)" if self.total else "")]
        if self.status:
            parts.append(self.status)
        parts.append(f"{format_duration(elapsed)} elapsed")
        if 0 < self.n < self.total:
            parts.append(f"about {format_duration(elapsed * (self.total - self.n) / self.n)} left")
        return ", ".join(parts)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.write(self.line())

    def close(self) -> None:
        """Stop the display; a run that printed plain lines ends with one more, its final state."""
        self._stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
            self._timer = None
            if self.clock() - self.start >= self.interval:
                self.write(self.line())
        if self._bar is not None:
            self._bar.close()
            self._bar = None
