"""Group commit: concurrent callers share writes, each gets its own results, errors stay theirs."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from repositories.groupcommit import GroupCommit


class Recorder:
    """A write that records its batches and is slow enough for callers to pile up."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.writing = threading.Event()
        self.gate = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[str]:
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        if len(self.batches) == 1:
            self.writing.set()
            self.gate.wait(5)
        return [f"r{item}" for item in items]


def test_a_lone_caller_writes_at_once() -> None:
    write = Recorder()
    write.gate.set()
    assert GroupCommit(write)([1, 2]) == ["r1", "r2"]
    assert write.batches == [[1, 2]]


def test_callers_that_wait_are_written_together_and_get_their_own_results() -> None:
    write = Recorder()
    group = GroupCommit(write)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(group, [0])
        write.writing.wait(5)
        rest = [pool.submit(group, [10 * n, 10 * n + 1]) for n in range(1, 6)]
        while len(group._queue) < 5:  # all five are waiting behind the first write
            threading.Event().wait(0.01)
        write.gate.set()
        assert first.result() == ["r0"]
        assert [f.result() for f in rest] == [[f"r{10 * n}", f"r{10 * n + 1}"] for n in range(1, 6)]
    assert len(write.batches) == 2
    assert sorted(write.batches[1]) == sorted(i for n in range(1, 6) for i in (10 * n, 10 * n + 1))


def test_one_callers_bad_item_fails_only_that_caller() -> None:
    write = Recorder(fail_on=31)
    group = GroupCommit(write)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(group, [0])
        write.writing.wait(5)
        good = pool.submit(group, [20])
        bad = pool.submit(group, [30, 31])
        while len(group._queue) < 2:
            threading.Event().wait(0.01)
        write.gate.set()
        assert first.result() == ["r0"]
        assert good.result() == ["r20"]
        with pytest.raises(ValueError, match="bad item 31"):
            bad.result()


def test_many_threads_lose_nothing() -> None:
    write = Recorder()
    write.gate.set()
    group = GroupCommit(write, max_items=7)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: group([n, n + 1000]), range(300)))
    assert answers == [[f"r{n}", f"r{n + 1000}"] for n in range(300)]
    written = sorted(i for batch in write.batches for i in batch)
    assert written == sorted([*range(300), *range(1000, 1300)])
    assert max(len(b) for b in write.batches) <= 7
