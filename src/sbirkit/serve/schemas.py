"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

Coordinates = Annotated[list[float], Field(description="x (or y, or t) values of one stroke's points")]


class StrokeQuery(BaseModel):
    """A drawing as strokes, in the Quick, Draw! form: each stroke is ``[xs, ys]`` (or
    ``[xs, ys, ts]``; times are ignored), coordinates with y pointing down.

    By default (``fit: "bbox"``) the drawing is drawn exactly as the training data were: its
    bounding box fitted to the model's input with the datasets' margin, centred, at the line width
    the model was trained with, wherever and however thick it was drawn (one rasterisation for
    training and for the page; ``canvas`` and ``stroke_width`` are then accepted and do not change
    the image). ``fit: "canvas"`` places it as drawn on the ``canvas`` area ``[width, height]``
    instead, with ``stroke_width`` (in canvas units) as its line width.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strokes: list[Annotated[list[Coordinates], Field(min_length=2, max_length=3)]] = Field(
        ..., description="[[xs, ys], ...]: one entry per stroke", examples=[[[[10, 60, 110], [10, 90, 10]]]])
    canvas: Optional[tuple[float, float]] = Field(None, description="[width, height] of the drawing area")
    stroke_width: Optional[float] = Field(None, description="line width in canvas units (needs canvas; "
                                          "changes the image only with fit canvas)")
    fit: Literal["bbox", "canvas"] = Field("bbox", description="bbox: the ink fitted and drawn as the training "
                                           "data were (default); canvas: placed as drawn on canvas")


class Hit(BaseModel):
    rank: int = Field(..., description="1 for the best match")
    id: str
    score: float = Field(..., description="cosine similarity for metric ip (higher is closer); squared L2 "
                         "distance for l2 (lower is closer)")
    class_name: Optional[str] = None
    modality: str
    thumbnail: Optional[str] = Field(None, description="URL of a small JPEG of the item (null: no image file)")
    item: str = Field(..., description="URL of the item's metadata")


class SearchResponse(BaseModel):
    results: list[Hit]
    k: int
    direction: str
    classes: Optional[list[str]] = None
    metric: str
    warnings: list[str] = Field(default_factory=list, description="e.g. 'looks like a photo, not a drawing'")
    index_version: Optional[str] = None
    took_ms: float


class ErrorResponse(BaseModel):
    error: str = Field(..., description="one line: what was wrong, naming the field or limit")


class Health(BaseModel):
    status: str
    items: int


class ItemResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    class_name: Optional[str] = None
    modality: str
    thumbnail: Optional[str] = None
