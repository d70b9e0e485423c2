"""MemoryBudget: reservations wait their turn in order, give up at their deadline, and never
leak bytes, whatever way a wait ends."""

import pytest
import trio
import trio.testing

from appliance.membudget import BudgetExceeded, MemoryBudget


async def test_reservations_beyond_the_capacity_wait_until_bytes_are_given_back():
    budget = MemoryBudget(100)
    a = await budget.reserve(60, wait_s=1)
    b = await budget.reserve(40, wait_s=1)
    assert budget.used == 100
    got = []

    async def third():
        got.append(await budget.reserve(50, wait_s=10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not got and budget.waiting == 1
        b.release()  # 60 used: 50 more do not fit yet
        await trio.testing.wait_all_tasks_blocked()
        assert not got
        a.release()
    assert got and budget.used == 50
    got[0].release()
    got[0].release()  # idempotent
    assert budget.used == 0 and budget.waiting == 0


async def test_first_come_first_served_a_small_request_does_not_overtake_a_large_one():
    budget = MemoryBudget(100)
    held = await budget.reserve(70, wait_s=1)
    order = []

    async def want(name, n):
        lease = await budget.reserve(n, wait_s=10)
        order.append(name)
        await trio.sleep(0.01)
        lease.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(want, "large", 80)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(want, "small", 25)  # would fit now, but queues behind "large"
        await trio.testing.wait_all_tasks_blocked()
        assert order == []
        held.release()
    assert order == ["large", "small"]
    assert budget.used == 0


async def test_a_wait_that_times_out_raises_and_lets_the_ones_behind_it_in():
    budget = MemoryBudget(100)
    held = await budget.reserve(70, wait_s=1)
    got, gave_up = [], []

    async def large():
        with pytest.raises(BudgetExceeded):
            await budget.reserve(50, wait_s=0.05)
        gave_up.append(trio.current_time())

    async def small():
        got.append(await budget.reserve(20, wait_s=10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(large)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(small)  # 20 would fit, but it queues behind "large"
        await trio.testing.wait_all_tasks_blocked()
        assert got == [] and budget.waiting == 2
    assert gave_up and len(got) == 1 and budget.used == 90
    held.release()
    got[0].release()
    assert budget.used == 0 and budget.waiting == 0


async def test_a_cancelled_wait_reserves_nothing():
    budget = MemoryBudget(10)
    held = await budget.reserve(10, wait_s=1)
    with trio.move_on_after(0.05):
        await budget.reserve(5, wait_s=10)
    assert budget.waiting == 0
    held.release()
    assert budget.used == 0


async def test_a_request_larger_than_the_budget_runs_alone():
    budget = MemoryBudget(10)
    lease = await budget.reserve(1000, wait_s=1)
    assert budget.used == 10
    with pytest.raises(BudgetExceeded):
        await budget.reserve(1, wait_s=0.01)
    lease.release()
    assert (await budget.reserve(0, wait_s=0)).nbytes == 0


def test_a_budget_needs_room():
    with pytest.raises(ValueError):
        MemoryBudget(0)
