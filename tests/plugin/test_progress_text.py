"""The progress line under the bar: elapsed time always, an estimate once it means something."""

from __future__ import annotations

from plugin.common.progress import ProgressClock, format_duration, progress_line


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_durations_read_as_clock_times() -> None:
    assert format_duration(7.4) == "0:07"
    assert format_duration(65) == "1:05"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(-3) == "0:00"


def test_estimate_waits_for_real_progress_then_follows_the_rate() -> None:
    now = FakeTime()
    clock = ProgressClock(now)
    now.t += 10  # loading the model: 0% for ten seconds must not count
    clock.update(0.0)
    assert clock.remaining() is None
    clock.update(0.1)
    now.t += 1
    clock.update(0.12)
    assert clock.remaining() is None  # too soon and too little to tell
    now.t += 3
    clock.update(0.3)  # 0.2 in 4 s: 0.7 left takes 14 s
    assert clock.remaining() == 14.0
    assert progress_line("upscaling: step 3 of 10", clock) == (
        "upscaling: step 3 of 10 · 0:14 elapsed, about 0:14 left")
    # the backend's note (job_runner.stage_text's second line) comes after the time
    assert progress_line("upscaling: step 3 of 10\nA fast model takes 8 s.", clock) == (
        "upscaling: step 3 of 10 · 0:14 elapsed, about 0:14 left · A fast model takes 8 s.")
    assert progress_line("upscaling\nA fast model takes 8 s.", None) == (
        "upscaling · A fast model takes 8 s.")
    now.t += 4  # no news for four seconds: the estimate counts down
    assert clock.remaining() == 10.0


def test_a_stage_that_starts_over_restarts_the_estimate() -> None:
    now = FakeTime()
    clock = ProgressClock(now)
    clock.update(0.1)
    now.t += 5
    clock.update(0.9)
    assert clock.remaining() is not None
    clock.update(0.05)
    assert clock.remaining() is None
    clock.update(-1.0)  # unknown (reconnecting) changes nothing
    assert clock.fraction == 0.05
    assert progress_line("", None) == ""
