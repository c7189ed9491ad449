"""Request batching: queries that arrive together are embedded in one forward pass.

The first query of a batch waits up to ``wait_s`` for others while other requests are still
being read and preprocessed (a lone query does not wait), or until ``max_batch`` are queued;
then one worker thread embeds the batch (grouped by snapshot and query modality) and
searches the index (grouped by row filter and nprobe, with the largest ``k`` of the group), off
the event loop. Only one batch runs at a time, so torch's own threads are never oversubscribed;
queries arriving meanwhile queue up and form the next batch, so batches grow with load.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SbirkitError

log = logging.getLogger(__name__)


class OverloadedError(SbirkitError):
    """More queries are waiting for the model than the server accepts (HTTP 503)."""


@dataclass
class Job:
    """One query: its image, which branch embeds it, and what to search for."""

    snapshot: Any
    modality: str  # the query's modality: "sketch" or "photo"
    image: np.ndarray  # (H, W, 3) uint8 at the model's size
    k: int
    rows: Any = None  # RowFilter or None
    filter_key: Any = None
    nprobe: int | None = None
    future: asyncio.Future | None = field(default=None, repr=False)


@dataclass
class BatchStats:
    batches: int = 0
    queries: int = 0
    largest: int = 0

    def as_dict(self) -> dict:
        mean = self.queries / self.batches if self.batches else 0.0
        return {"batches": self.batches, "queries": self.queries, "largest_batch": self.largest,
                "mean_batch": round(mean, 2)}


#: From this many queries in one search, exact (Flat) search goes through BLAS (one matrix product
#: over the gallery) instead of FAISS's per-query scan. Measured on 100k x 128 vectors, one thread:
#: the scan costs 6-9 ms a query whatever the batch; BLAS about the same at 4, 2 ms at 16, 1.6 ms at 32.
BLAS_MIN_BATCH = 8


@contextmanager
def _blas_for(n: int):
    """Let FAISS use BLAS for a search of ``n`` queries when that is faster (``n >= BLAS_MIN_BATCH``).

    FAISS's switch is a process-wide setting; in the server only the model thread searches, and it
    puts the setting back after each search.
    """
    import faiss

    if n < BLAS_MIN_BATCH:
        yield
        return
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 1
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def run_batch(jobs: list[Job]) -> list[tuple[np.ndarray, np.ndarray] | BaseException]:
    """Embed and search a batch; one result (scores, rows) or exception per job, in order."""
    out: list[Any] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        groups[(id(job.snapshot), job.modality)].append(i)
    vectors: dict[int, np.ndarray] = {}
    for members in groups.values():
        first = jobs[members[0]]
        try:
            z = first.snapshot.model.encode(first.modality, np.stack([jobs[i].image for i in members]))
        except Exception as exc:  # noqa: BLE001 - reported to each query of the group
            for i in members:
                out[i] = exc
            continue
        for row, i in enumerate(members):
            vectors[i] = z[row]
    searches: dict[tuple, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        if i in vectors:
            searches[(id(job.snapshot), job.filter_key, job.nprobe)].append(i)
    for members in searches.values():
        first = jobs[members[0]]
        k = max(jobs[i].k for i in members)
        try:
            with _blas_for(len(members)):
                result = first.snapshot.index.search(np.stack([vectors[i] for i in members]), k=k,
                                                     nprobe=first.nprobe, rows=first.rows)
        except Exception as exc:  # noqa: BLE001
            for i in members:
                out[i] = exc
            continue
        for row, i in enumerate(members):
            kk = min(jobs[i].k, result.indices.shape[1])
            out[i] = (result.scores[row, :kk].copy(), result.indices[row, :kk].copy())
    return out


class Batcher:
    """Collects :class:`Job` s on the event loop and runs them in batches on one worker thread."""

    def __init__(self, wait_s: float = 0.005, max_batch: int = 32, max_pending: int = 1024):
        self.wait_s = float(wait_s)
        self.max_batch = int(max_batch)
        self.max_pending = int(max_pending)
        self.stats = BatchStats()
        self.pending = 0  # queries submitted and not answered yet (queued, batching or running)
        #: requests being read and preprocessed, not submitted yet (the app counts them): a batch
        #: waits for company only while some are on their way, so a lone query never waits
        self.arriving = 0
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def _ensure_started(self) -> None:
        """Start (again) on the running loop: an app's lifespan may end and start more than once
        (test clients do), and each event loop needs its own queue and task."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sbirkit-model")
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name="sbirkit-batcher")

    async def submit(self, job: Job) -> tuple[np.ndarray, np.ndarray]:
        """Queue ``job`` and wait for its (scores, rows)."""
        self._ensure_started()
        assert self._queue is not None
        if self.pending >= self.max_pending:
            raise OverloadedError(
                f"server busy: {self.pending} queries are already waiting for the model (limit "
                f"{self.max_pending}); try again shortly"
            )
        job.future = self._loop.create_future()
        self.pending += 1
        self._queue.put_nowait(job)
        try:
            return await job.future
        finally:
            self.pending -= 1

    async def _collect(self) -> list[Job]:
        queue = self._queue
        batch = [await queue.get()]
        deadline = self._loop.time() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())  # whatever is already waiting joins at once
                continue
            except asyncio.QueueEmpty:
                pass
            if self.arriving <= 0:  # no other query is on its way: waiting would only add latency
                break
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [job for job in batch if not job.future.done()]  # a cancelled request needs no work
            if not live:
                continue
            try:
                results = await self._loop.run_in_executor(self._executor, run_batch, live)
            except Exception as exc:  # noqa: BLE001 - e.g. the executor was shut down
                results = [exc] * len(live)
            self.stats.batches += 1
            self.stats.queries += len(live)
            self.stats.largest = max(self.stats.largest, len(live))
            for job, result in zip(live, results):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._task = None

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
