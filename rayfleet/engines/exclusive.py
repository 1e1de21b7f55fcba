"""A gate that lets requests run together, or one exclusive request alone.

vLLM (0.32, CPU) computes a prompt's log probabilities on a LoRA-enabled engine with the LoRA
indices of the whole batch: batched with any other request, it fails inside the engine
(``einsum(): subscript b has size 3 ... 14``) and the engine dies for every request. The
serving engine therefore runs such a request alone (:class:`ExclusiveGate`): it waits for the
running requests to end, new ones wait for it, and it goes before requests that came after it.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class ExclusiveGate:
    """Shared holders run together; an exclusive holder runs alone, ahead of shared ones that arrive after it."""

    def __init__(self):
        self._changed = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @asynccontextmanager
    async def hold(self, exclusive: bool) -> AsyncIterator[None]:
        await (self._enter_exclusive() if exclusive else self._enter_shared())
        try:
            yield
        finally:
            async with self._changed:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._changed.notify_all()

    async def _enter_shared(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._exclusive and not self._waiting_exclusive)
            self._shared += 1

    async def _enter_exclusive(self) -> None:
        async with self._changed:
            self._waiting_exclusive += 1
            try:
                await self._changed.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting_exclusive -= 1
                self._changed.notify_all()  # shared holders that waited behind this one may go if it gave up
            self._exclusive = True
