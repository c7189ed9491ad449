"""Property-based requests: schemathesis generates requests from the app's own OpenAPI schema
(every operation, every request body type), hypothesis generates stroke drawings and byte strings.
Nothing may answer 5xx, every refusal is a one-line JSON error, and the index never changes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import folder_digest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")

FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def _check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and "\n" not in body["error"], body


def test_schema_driven_requests_never_get_a_server_error(app, index_dir):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("GET", "/health"), ("GET", "/info"), ("GET", "/items/{item_id}"), ("GET", "/items/{item_id}/thumbnail"),
        ("POST", "/search")}
    before = folder_digest(index_dir)
    statuses: dict[str, set[int]] = {}
    def fuzz(op):
        name = f"{op.method.upper()} {op.path}"

        @FUZZ
        @given(case=op.as_strategy())
        def run(case):
            response = case.call()
            statuses.setdefault(name, set()).add(response.status_code)
            _check(response)
        return run

    for op in operations:
        fuzz(op)()
    assert statuses["POST /search"] & {415, 422} and statuses["GET /items/{item_id}"] == {404}
    assert folder_digest(index_dir) == before


coordinate = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32),
                       st.integers(-2**40, 2**40), st.sampled_from([0, 1e-300, -0.0, 1e6, -1e6]))
stroke = st.lists(coordinate, min_size=0, max_size=30).flatmap(
    lambda xs: st.tuples(st.just(xs), st.lists(coordinate, min_size=len(xs), max_size=len(xs))))
drawing = st.fixed_dictionaries(
    {"strokes": st.lists(stroke.map(list), max_size=6)},
    optional={"canvas": st.lists(st.floats(-10, 1e7, allow_nan=False), min_size=2, max_size=2),
              "stroke_width": st.floats(-5, 1e4, allow_nan=False)})


@FUZZ
@given(body=drawing)
def test_random_drawings_are_searched_or_refused(client, body):
    r = client.post("/search?k=3", content=json.dumps(body), headers={"Content-Type": "application/json"})
    _check(r)
    if r.status_code == 200:
        assert 1 <= len(r.json()["results"]) <= 3


@FUZZ
@given(data=st.binary(max_size=4096), ctype=st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp",
                                                               "image/svg+xml", "application/json"]),
       prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\0\0\0\0WEBP",
                               b"<svg xmlns='http://www.w3.org/2000/svg'>", b"{\"strokes\": "]))
def test_random_bytes_are_refused_cleanly(client, data, ctype, prefix):
    _check(client.post("/search", content=prefix + data, headers={"Content-Type": ctype}))
