"""Dynamic micro-batching: concurrent requests merged into one forward pass, each caller answered with its own.

A request is a list of texts. The batcher takes the first request waiting, then gathers more until the batch
holds `max_batch` texts or `max_wait_s` has passed since the first arrived, and runs the merged texts through
`predict` in one call on a worker thread (the event loop keeps accepting requests meanwhile; the model sorts
the texts by length, so little of the forward pass is padding). A request larger than `max_batch` runs alone.
If a merged call raises, each request of that batch is run again on its own, so one bad request fails only
itself. With `max_batch=1` every request is its own forward pass (the baseline the bench compares against).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    def __init__(self, predict: Callable[[list[str]], np.ndarray], executor: Executor, max_batch: int = 32,
                 max_wait_s: float = 0.005, on_batch: Callable[[int, int], None] | None = None):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch} and {max_wait_s}.")
        self.predict, self.executor = predict, executor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.on_batch = on_batch  # (texts, requests) of every forward pass, for the metrics
        self._queue: asyncio.Queue[_Request] | None = None
        self._held: _Request | None = None  # a request that did not fit the last batch: first in the next
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, texts: list[str]) -> np.ndarray:
        """P(positive) of each of `texts`, in order; raises what `predict` raised for them."""
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the micro-batcher is not running")
        request = _Request(list(texts), asyncio.get_running_loop().create_future())
        await self._queue.put(request)
        return await request.future

    async def _next(self, timeout: float | None) -> _Request | None:
        """The held request, else the next queued one: waiting for it when `timeout` is None, else polling
        until `timeout` seconds pass (polling, not wait_for on Queue.get: a get cancelled by a timeout as an
        item arrives could lose that request on Python 3.11)."""
        if self._held is not None:
            request, self._held = self._held, None
            return request
        if timeout is None:
            return await self._queue.get()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                await asyncio.sleep(min(left, 0.0005))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._next(None)]
            size = len(batch[0].texts)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                request = await self._next(deadline - loop.time())
                if request is None:
                    break
                if size + len(request.texts) > self.max_batch:
                    self._held = request  # keeps its place: first of the next batch
                    break
                batch.append(request)
                size += len(request.texts)
            batch = [r for r in batch if not r.future.done()]  # callers that went away need no answer
            if batch:
                await self._answer(batch)

    async def _answer(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        texts = [t for r in batch for t in r.texts]
        try:
            probs = await loop.run_in_executor(self.executor, self.predict, texts)
        except Exception as exc:  # noqa: BLE001 - passed on to the callers
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            for request in batch:  # find the request that fails; the others are answered
                await self._answer([request])
            return
        if self.on_batch is not None:
            self.on_batch(len(texts), len(batch))
        start = 0
        for request in batch:
            _settle(request, result=probs[start : start + len(request.texts)])
            start += len(request.texts)


def _settle(request: _Request, result=None, exc: BaseException | None = None) -> None:
    if request.future.done():  # cancelled: the client disconnected
        return
    if exc is not None:
        request.future.set_exception(exc)
    else:
        request.future.set_result(result)
