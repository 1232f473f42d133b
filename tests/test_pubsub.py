"""Topic / Subscription: fan-out order, overflow policies, closing, bounded memory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from flowno import EventLoop, sleep, spawn
from helpers import until_parked

from flowno_io import Subscription, Topic

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        return await main()

    result: T = EventLoop().run_until_complete(wrapper(), join=True)
    return result


async def collect(subscription: Subscription[Any]) -> list[Any]:
    return [item async for item in subscription]


def test_every_subscriber_gets_every_item_in_order() -> None:
    async def main() -> list[list[int]]:
        topic: Topic[int] = Topic()
        readers = [await spawn(collect(topic.subscribe())) for _ in range(5)]
        await sleep(0)
        for n in range(100):
            assert topic.publish(n) == 5
            if n % 10 == 0:
                await sleep(0)
        topic.close()
        return [await reader.join() for reader in readers]

    assert run(main) == [list(range(100))] * 5


def test_waiting_subscribers_are_woken_by_publish() -> None:
    async def main() -> list[str]:
        topic: Topic[str] = Topic()
        got: list[str] = []

        async def first_item(subscription: Subscription[str]) -> None:
            got.append(await subscription.__anext__())

        readers = [await spawn(first_item(topic.subscribe())) for _ in range(200)]
        for reader in readers:
            await until_parked(reader)  # all 200 parked
        topic.publish("x")  # one plain call wakes all of them
        for reader in readers:
            await reader.join()
        return got

    assert run(main) == ["x"] * 200


def test_drop_oldest_keeps_the_newest_and_counts_the_losses() -> None:
    async def main() -> tuple[list[int], int, int]:
        topic: Topic[int] = Topic(max_buffer=3)
        slow = topic.subscribe()
        for n in range(10_000):
            topic.publish(n)
        peak = len(slow)  # memory stays bounded by max_buffer
        topic.close()
        return await collect(slow), slow.dropped, peak

    assert run(main) == ([9997, 9998, 9999], 9997, 3)


def test_disconnect_policy_ends_a_slow_subscriber_only() -> None:
    async def main() -> tuple[list[int], list[int], bool, int, list[int]]:
        topic: Topic[int] = Topic(max_buffer=2, overflow="disconnect")
        fast = await spawn(collect(topic.subscribe()))
        slow = topic.subscribe()
        await sleep(0)
        reached = []
        for n in range(5):
            reached.append(topic.publish(n))
            await sleep(0)
        subscribers = topic.subscribers
        topic.close()
        return await fast.join(), await collect(slow), slow.overflowed, subscribers, reached

    fast, slow, overflowed, subscribers, reached = run(main)
    assert fast == [0, 1, 2, 3, 4]
    assert slow == [] and overflowed  # dropped at the third item, its buffer discarded
    assert subscribers == 1
    assert reached == [2, 2, 1, 1, 1]


def test_push_gives_one_subscriber_an_item_before_the_topics_and_ignores_a_closed_one() -> None:
    async def main() -> tuple[list[str], list[str], list[str], int]:
        topic: Topic[str] = Topic()
        greeted = topic.subscribe(max_buffer=2)
        greeted.push("hello")  # buffered before anything is published
        waiting = topic.subscribe()
        reader = await spawn(collect(waiting))
        await sleep(0)  # the reader waits: the push wakes it
        waiting.push("hi")
        other = topic.subscribe()
        topic.publish("a")
        topic.publish("b")
        greeted.push("late")  # a full buffer: the drop_oldest policy applies
        topic.close()
        greeted.push("after close")
        return await collect(greeted), await reader.join(), await collect(other), greeted.dropped

    assert run(main) == (["b", "late"], ["hi", "a", "b"], ["a", "b"], 2)


def test_per_subscriber_overrides() -> None:
    async def main() -> tuple[list[int], bool]:
        topic: Topic[int] = Topic(max_buffer=100)
        strict = topic.subscribe(max_buffer=1, overflow="disconnect")
        lenient = topic.subscribe()
        topic.publish(1)
        topic.publish(2)
        topic.close()
        return await collect(lenient), strict.overflowed

    assert run(main) == ([1, 2], True)


def test_close_lets_subscribers_drain_then_end_and_later_subscriptions_end_at_once() -> None:
    async def main() -> tuple[list[str], list[str], bool]:
        topic: Topic[str] = Topic()
        subscription = topic.subscribe()
        topic.publish("a")
        topic.publish("b")
        topic.close()
        late = topic.subscribe()
        return await collect(subscription), await collect(late), topic.closed

    assert run(main) == (["a", "b"], [], True)
    topic: Topic[str] = Topic()
    topic.close()
    with pytest.raises(RuntimeError, match="closed"):
        topic.publish("x")


def test_closing_a_subscription_wakes_its_reader_and_leaves_the_topic() -> None:
    async def main() -> tuple[list[int], int]:
        topic: Topic[int] = Topic()
        subscription = topic.subscribe()
        reader = await spawn(collect(subscription))
        await until_parked(reader)
        subscription.close()  # from another task, while the reader waits
        return await reader.join(), topic.subscribers

    assert run(main) == ([], 0)


def test_context_managers_unsubscribe() -> None:
    async def main() -> list[int]:
        topic: Topic[int] = Topic()
        counts = []
        with topic.subscribe():
            counts.append(topic.subscribers)
        async with topic.subscribe() as subscription:
            counts.append(topic.subscribers)
            topic.publish(7)
            counts.append(subscription.get_nowait() or 0)
            counts.append(subscription.get_nowait() is None)
        counts.append(topic.subscribers)
        return counts

    assert run(main) == [1, 1, 7, True, 0]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_buffer": 0}, "max_buffer"), ({"overflow": "block"}, "overflow")],
)
def test_invalid_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topic(**options)
    with pytest.raises(ValueError, match=message):
        Topic().subscribe(**options)
