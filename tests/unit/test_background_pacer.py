"""The background drift check's pacing: its work between two calls takes at most its share of the time."""

from __future__ import annotations

import pytest

from pg2neo.reconcile.background import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("share", "work", "pause"), [(0.25, 1.0, 3.0), (0.5, 2.0, 2.0), (1.0, 5.0, 0.0)])
def test_a_chunk_of_work_is_followed_by_a_pause_that_keeps_the_share(share: float, work: float, pause: float) -> None:
    clock = FakeClock()
    pacer = Pacer(share, clock)
    pacer.sleep = clock.sleep
    for _ in range(3):
        clock.now += work  # a chunk of the check's work
        pacer()
    assert clock.slept == ([pause] * 3 if pause else [])
    assert work * 3 / (clock.now - 100.0) == pytest.approx(share)


def test_time_spent_sleeping_is_not_counted_as_work() -> None:
    clock = FakeClock()
    pacer = Pacer(0.25, clock)
    pacer.sleep = clock.sleep
    clock.now += 1.0
    pacer()  # sleeps 3 s
    pacer()  # no work since: no pause
    assert clock.slept == [3.0]
