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


def test_a_check_waits_while_the_service_has_a_backlog_but_not_forever() -> None:
    clock = FakeClock()
    idle_at = [clock.now]
    pacer = Pacer(1.0, clock, idle_since=lambda: idle_at[0], patience=10.0)
    pacer.sleep = clock.sleep
    pacer()  # the service was idle just now: no wait
    assert clock.slept == []
    clock.now += 5.0  # the service has not been idle for 5 s: it has a backlog
    pacer()
    assert sum(clock.slept) == pytest.approx(10.0)  # waited its patience, then goes on
    clock.slept.clear()

    def idle_again(seconds: float) -> None:
        clock.sleep(seconds)
        idle_at[0] = clock.now  # the backlog is gone: the service calls on_idle again

    pacer.sleep = idle_again
    clock.now += 5.0
    pacer()
    assert clock.slept == [0.25]  # one poll, then the service was idle
