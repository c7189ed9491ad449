"""Request batching: one forward pass for queries that arrive together, and the same answers as
one at a time."""

from __future__ import annotations

import json

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image

from sbirkit.serve.batching import Batcher, Job, run_batch


def _jobs(app, synth, n=8):
    from sbirkit.index.files import load_query_sketch

    snap = app.state.holder.snapshot
    files = sorted((synth / "sketch").rglob("*.png"))[:n]
    images = [np.asarray(load_query_sketch(f, size=snap.model.size), dtype=np.uint8) for f in files]
    return snap, [Job(snapshot=snap, modality="sketch", image=im, k=5) for im in images]


def test_a_full_batch_runs_at_once_as_one_forward_pass(app, synth):
    """max_batch queries queued together run as one batch without waiting out the (long) wait."""
    import faiss

    from sbirkit.serve.batching import BLAS_MIN_BATCH

    snap, jobs = _jobs(app, synth, 8)
    assert len(jobs) >= BLAS_MIN_BATCH  # the batch searches through BLAS, one query alone does not
    blas_switch = faiss.cvar.distance_compute_blas_threshold
    alone = [run_batch([job])[0] for job in jobs]
    batcher = Batcher(wait_s=30.0, max_batch=8)

    async def go():
        results = [None] * len(jobs)

        async def one(i):
            results[i] = await batcher.submit(jobs[i])
        with anyio.fail_after(20):  # far below the 30 s wait: the batch did not wait for it
            async with anyio.create_task_group() as tg:
                for i in range(len(jobs)):
                    tg.start_soon(one, i)
        await batcher.aclose()
        return results

    together = anyio.run(go)
    batcher.shutdown()
    assert batcher.stats.batches == 1 and batcher.stats.largest == 8 and batcher.stats.queries == 8
    assert faiss.cvar.distance_compute_blas_threshold == blas_switch  # FAISS's global switch put back
    for (s1, r1), (s2, r2) in zip(alone, together):
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_allclose(s1, s2, atol=1e-5)


def test_run_batch_groups_by_modality_filter_and_k(app, synth):
    snap, jobs = _jobs(app, synth, 4)
    photo = np.asarray(Image.open(sorted((synth / "photo").rglob("*.png"))[0]).convert("RGB"), dtype=np.uint8)
    house = snap.row_filter("photo", ("house",))
    mixed = [
        jobs[0],
        Job(snapshot=snap, modality="photo", image=photo, k=3),
        Job(snapshot=snap, modality="sketch", image=jobs[1].image, k=9, rows=house, filter_key=("photo", ("house",))),
        Job(snapshot=snap, modality="sketch", image=jobs[2].image, k=2),
    ]
    together = run_batch(mixed)
    for job, got in zip(mixed, together):
        scores, rows = run_batch([job])[0]
        np.testing.assert_array_equal(got[1], rows)
        assert len(got[1]) == min(job.k, 8 if job.rows is not None else 48)
    assert set(snap.class_names[together[2][1]]) == {"house"}
    assert together[1][0][0] == pytest.approx(1.0, abs=1e-4)  # the photo finds itself


def test_concurrent_requests_give_the_same_results_as_sequential_ones(index_dir, synth):
    """Twenty mixed queries (PNG, SVG, strokes, class filters, photo2photo, different k) sent all at
    once through the app give exactly the sequential answers, and were batched."""
    from sbirkit.serve import create_app

    app = create_app(index_dir, batch_wait_ms=50.0, max_batch=64)
    sketches = sorted((synth / "sketch").rglob("*.png"))
    photos = sorted((synth / "photo").rglob("*.png"))
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><path d="M1 1 L9 1 L9 9 L1 9 Z"/></svg>')
    requests = []
    for i in range(12):
        requests.append((f"k={3 + i % 5}" + ("&class=tree" if i % 4 == 0 else ""), sketches[i * 4].read_bytes(),
                         "image/png"))
    for i in range(4):
        requests.append(("k=4&direction=photo2photo", photos[i * 11].read_bytes(), "image/png"))
    requests.append(("k=6", svg.encode(), "image/svg+xml"))
    for i in range(3):
        strokes = {"strokes": [[[0, 40 + i * 10, 80, 0], [0, 80, 10 * i, 0]]], "canvas": [100, 100],
                   "stroke_width": 3}
        requests.append(("k=5", json.dumps(strokes).encode(), "application/json"))

    async def go(concurrent: bool):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async def one(query, body, ctype):
                r = await c.post(f"/search?{query}", content=body, headers={"Content-Type": ctype})
                assert r.status_code == 200, r.text
                return r.json()["results"]
            if not concurrent:
                return [await one(*req) for req in requests]
            out = [None] * len(requests)

            async def slot(i):
                out[i] = await one(*requests[i])
            async with anyio.create_task_group() as tg:
                for i in range(len(requests)):
                    tg.start_soon(slot, i)
            return out

    sequential = anyio.run(go, False)
    batches_before = app.state.batcher.stats.batches
    concurrent = anyio.run(go, True)
    batches = app.state.batcher.stats.batches - batches_before
    assert batches < len(requests), batches  # some queries shared a forward pass
    assert app.state.batcher.stats.largest > 1
    for a, b in zip(sequential, concurrent):
        assert [h["id"] for h in a] == [h["id"] for h in b]
        np.testing.assert_allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-5)


def test_batching_off_runs_one_query_per_pass(index_dir, synth):
    from sbirkit.serve import create_app

    app = create_app(index_dir, batch_wait_ms=0.0, max_batch=1)
    body = sorted((synth / "sketch").rglob("*.png"))[0].read_bytes()

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(lambda: c.post("/search", content=body, headers={"Content-Type": "image/png"}))

    anyio.run(go)
    stats = app.state.batcher.stats
    assert stats.queries == 6 and stats.batches == 6 and stats.largest == 1


def test_a_lone_query_does_not_wait_and_a_batch_waits_only_for_queries_on_their_way(app, synth):
    snap, jobs = _jobs(app, synth, 2)
    batcher = Batcher(wait_s=30.0, max_batch=8)

    async def lone():
        with anyio.fail_after(10):  # far below the 30 s wait
            return await batcher.submit(jobs[0])

    anyio.run(lone)
    assert batcher.stats.batches == 1 and batcher.stats.largest == 1

    async def pair():
        batcher.arriving = 1  # a second request is still being preprocessed
        results = [None, None]

        async def first():
            results[0] = await batcher.submit(jobs[0])

        async def second():
            await anyio.sleep(0.2)  # arrives while the first waits for it
            batcher.arriving = 0
            results[1] = await batcher.submit(jobs[1])
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                tg.start_soon(second)
        return results

    anyio.run(pair)
    batcher.shutdown()
    assert batcher.stats.batches == 2 and batcher.stats.largest == 2
