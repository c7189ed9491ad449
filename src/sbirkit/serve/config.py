"""What a server is started with: the index, the model, the request limits, batching, security.

Everything here is plain data (no FastAPI import), so the command line can check flags, and a
multi-worker server can hand the same settings to every worker as JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace

from ..errors import UsageError

#: Environment variable that carries a :class:`ServeConfig` (JSON) to uvicorn worker processes.
CONFIG_ENV = "SBIRKIT_SERVE_CONFIG"


@dataclass(frozen=True)
class Limits:
    """Bounds on one request. Each refusal is a 4xx with a one-line JSON ``{"error": ...}``.

    ``max_body_bytes``: the request body (413); ``max_pixels``: an uploaded image, read from its
    header before it is decoded (413; the library's own cap, 50 MP, applies too);
    ``max_strokes``/``max_points``: JSON strokes, and an SVG's strokes after curves are flattened
    (422); ``max_coordinate``: the largest absolute coordinate or canvas side in JSON strokes
    (422); ``max_k``: results per query (422 above it); ``max_pending``: queries waiting for the
    model at once before new ones get 503 (load shedding, so latency stays bounded).
    """

    max_body_bytes: int = 2_000_000
    max_pixels: int = 4096 * 4096
    max_strokes: int = 1_000
    max_points: int = 20_000
    max_coordinate: float = 1e6
    max_k: int = 100
    max_pending: int = 1_024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
                raise UsageError(f"limits.{f.name}: expected a positive number, got {value!r}")


@dataclass(frozen=True)
class ServeConfig:
    """A server's settings. ``run``/``which`` default to the model the index was built with.

    ``batch_wait_ms``: how long the first query of a batch waits for others before the model
    runs (0: no waiting; queries that arrived meanwhile are still batched); ``max_batch``: most
    queries in one forward pass (1 turns batching off). ``admin_token``: enables
    ``POST /admin/reload`` (absent without it). ``allowed_hosts``: ``Host`` header values
    accepted (None: any; the command line sets the loopback names when bound to loopback, which
    stops DNS-rebinding pages from reading the API). ``reload_signal``: a file whose change tells
    every worker of a multi-worker server to reload (set by ``sbirkit serve``).
    """

    index_dir: str
    run: str | None = None
    which: str | None = None
    limits: Limits = field(default_factory=Limits)
    batch_wait_ms: float = 5.0
    max_batch: int = 32
    admin_token: str | None = None
    allowed_hosts: tuple[str, ...] | None = None
    thumb_size: int = 192
    thumb_cache: int = 4096
    reload_signal: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.batch_wait_ms, (int, float)) or not 0 <= self.batch_wait_ms <= 1000:
            raise UsageError(f"batch_wait_ms: expected a number of milliseconds in 0..1000, got {self.batch_wait_ms!r}")
        if not isinstance(self.max_batch, int) or not 1 <= self.max_batch <= 1024:
            raise UsageError(f"max_batch: expected an integer in 1..1024, got {self.max_batch!r}")
        if not isinstance(self.thumb_size, int) or not 16 <= self.thumb_size <= 1024:
            raise UsageError(f"thumb_size: expected an integer in 16..1024 pixels, got {self.thumb_size!r}")
        if self.which is not None and self.which not in ("best", "last"):
            raise UsageError(f"which: expected 'best' or 'last', got {self.which!r}")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise UsageError("admin_token: expected at least 16 characters (use a long random string)")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        raw = json.loads(text)
        limits = Limits(**raw.pop("limits"))
        if raw.get("allowed_hosts") is not None:
            raw["allowed_hosts"] = tuple(raw["allowed_hosts"])
        return cls(limits=limits, **raw)

    @classmethod
    def from_env(cls) -> ServeConfig:
        text = os.environ.get(CONFIG_ENV)
        if not text:
            raise UsageError(f"{CONFIG_ENV}: expected the server settings as JSON, the variable is not set")
        return cls.from_json(text)

    def with_limits(self, **changes) -> ServeConfig:
        return replace(self, limits=replace(self.limits, **changes))


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
