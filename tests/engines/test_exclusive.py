"""The gate that runs a request alone (a prompt's log probabilities on a LoRA engine) beside shared ones."""

from __future__ import annotations

import asyncio

import pytest

from rayfleet.engines.exclusive import ExclusiveGate


async def hold(gate: ExclusiveGate, name: str, exclusive: bool, log: list, release: asyncio.Event) -> None:
    async with gate.hold(exclusive):
        log.append(f"{name} in")
        await release.wait()
        log.append(f"{name} out")


def test_shared_holders_run_together_and_an_exclusive_one_alone_before_those_after_it():
    async def scenario():
        gate, log = ExclusiveGate(), []
        first, exclusive, last = asyncio.Event(), asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(hold(gate, "a", False, log, first)),
                 asyncio.create_task(hold(gate, "b", False, log, first))]  # fmt: skip
        await asyncio.sleep(0.01)
        assert log == ["a in", "b in"]  # together
        tasks.append(asyncio.create_task(hold(gate, "x", True, log, exclusive)))
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(hold(gate, "c", False, log, last)))  # came after the exclusive one
        await asyncio.sleep(0.01)
        assert log == ["a in", "b in"]  # x waits for a and b; c waits for x
        first.set()
        await asyncio.sleep(0.01)
        assert log == ["a in", "b in", "a out", "b out", "x in"]
        exclusive.set()
        await asyncio.sleep(0.01)
        assert log[-2:] == ["x out", "c in"]
        last.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_an_exclusive_holder_that_gives_up_waiting_lets_the_others_go():
    async def scenario():
        gate, log, release = ExclusiveGate(), [], asyncio.Event()
        shared = asyncio.create_task(hold(gate, "a", False, log, release))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(hold(gate, "x", True, log, release))
        await asyncio.sleep(0.01)
        later = asyncio.create_task(hold(gate, "b", False, log, release))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.01)
        assert log == ["a in", "b in"]  # b no longer waits behind x
        release.set()
        await asyncio.gather(shared, later)

    asyncio.run(scenario())
