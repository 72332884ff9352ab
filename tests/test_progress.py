"""The progress display: plain, rate-limited lines off a terminal (log files, CI), a bar on one."""

from __future__ import annotations

import io
import time

from stylenerf_edit.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_it_writes_plain_lines_on_a_timer_with_status_and_time_left():
    out, clock = io.StringIO(), Clock()
    with Progress(600, "inverting", "step", stream=out, interval=0.05, clock=clock) as bar:
        clock.now += 90
        bar.set(150)
        bar.set_status("photo b.png step 150/300")
        deadline = time.monotonic() + 5
        while "150/600" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)      # the timer writes even though nothing calls the display
        bar.write("b.png -> inv/b  PSNR 25.00 dB")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    first = next(line for line in lines if "150/600" in line)
    assert first == ("inverting: 150/600 steps (25 %), photo b.png step 150/300, 1.5 min elapsed, "
                     "about 4.5 min left")
    assert "b.png -> inv/b  PSNR 25.00 dB" in lines
    assert lines[-1].startswith("inverting: 150/600 steps")      # the final state closes a long run


def test_lines_are_rate_limited_and_stop_when_closed():
    out = io.StringIO()
    bar = Progress(10, "batch", "photo", stream=out, interval=0.2)
    for i in range(10):
        bar.update()
        time.sleep(0.03)
    bar.close()
    n = len(out.getvalue().splitlines())
    assert 1 <= n <= 4            # ~0.3 s of updates at one line per 0.2 s, not one per update
    time.sleep(0.3)
    assert len(out.getvalue().splitlines()) == n


def test_on_a_terminal_it_is_a_bar_and_disabled_it_is_silent():
    out = io.StringIO()
    with Progress(4, "batch", "photo", stream=out, terminal=True) as bar:
        bar.update(2)
        bar.write("a.png done")
    assert "\r" in out.getvalue() and "a.png done" in out.getvalue() and "2/4" in out.getvalue()
    out = io.StringIO()
    with Progress(4, "batch", "photo", stream=out, enabled=False, interval=0.01) as bar:
        bar.update(2)
        time.sleep(0.05)
        bar.write("a.png done")
    assert out.getvalue() == ""


def test_durations_read_naturally():
    assert [format_duration(s) for s in (42, 210, 9000)] == ["42 s", "3.5 min", "2.5 h"]
