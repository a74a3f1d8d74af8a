"""Concurrent webhook requests share one write: each returns only once its own rows are
committed, and each hears of a failed write instead of being acknowledged."""

from __future__ import annotations

import threading
import time

import pytest

from sessions_app.group_commit import GroupWriteFailed, GroupWriter


class SlowStore:
    """A write that takes a while, as a commit does, and records each call."""

    def __init__(self, fail: bool = False) -> None:
        self.writes: list[list[int]] = []
        self.fail = fail
        self.first_started = threading.Event()

    def write(self, items: list[int]) -> None:
        self.first_started.set()
        time.sleep(0.05)
        if self.fail:
            raise RuntimeError("database is locked")
        self.writes.append(list(items))


def submit_all(writer: GroupWriter, store: SlowStore, count: int) -> list[object]:
    """One submission starts a write; `count` more arrive while it runs."""
    outcomes: list[object] = [None] * (count + 1)

    def run(index: int) -> None:
        try:
            writer.submit([index])
            outcomes[index] = "ok"
        except Exception as exc:
            outcomes[index] = exc

    first = threading.Thread(target=run, args=(0,))
    first.start()
    store.first_started.wait(2)
    others = [threading.Thread(target=run, args=(i,)) for i in range(1, count + 1)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(5)
    return outcomes


def test_requests_arriving_during_a_write_share_the_next_one():
    store = SlowStore()
    outcomes = submit_all(GroupWriter(store.write), store, 8)
    assert outcomes == ["ok"] * 9
    assert store.writes[0] == [0]
    assert sorted(i for batch in store.writes[1:] for i in batch) == list(range(1, 9))
    assert len(store.writes) < 9  # the eight that waited did not take a commit each


def test_a_write_never_takes_more_than_max_batch_and_nothing_is_left_behind():
    store = SlowStore()
    outcomes = submit_all(GroupWriter(store.write, max_batch=3), store, 10)
    assert outcomes == ["ok"] * 11
    assert all(len(batch) <= 3 for batch in store.writes)
    assert sorted(i for batch in store.writes for i in batch) == list(range(11))


def test_a_failed_write_fails_every_request_it_held():
    store = SlowStore(fail=True)
    outcomes = submit_all(GroupWriter(store.write), store, 5)
    assert all(isinstance(o, RuntimeError | GroupWriteFailed) for o in outcomes), outcomes
    assert store.writes == []


def test_a_lone_request_is_written_at_once():
    store = SlowStore()
    GroupWriter(store.write).submit([42])
    assert store.writes == [[42]]
    with pytest.raises(RuntimeError):
        GroupWriter(SlowStore(fail=True).write).submit([1])
