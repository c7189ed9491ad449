"""What ``sbirkit index info`` shows: an index described without loading its vectors."""

from __future__ import annotations

import os
from typing import Any

from .gallery import GalleryIndex
from .sizes import format_bytes as _size


def describe_index(index_dir: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
    """The live version's ``meta.json`` (plus path, version, file sizes); with ``verify``, also
    ``verified``: the files whose full SHA-256 was checked against it (reads the whole index once)."""
    meta = GalleryIndex.read_meta(index_dir)
    if verify:
        from .ondisk import verify_index

        meta["verified"] = verify_index(index_dir)
    return meta


def format_index_info(meta: dict[str, Any]) -> str:
    """:func:`describe_index`'s record as the lines ``sbirkit index info`` prints: size, model,
    factory, metric, dim, nprobe, created, files, the autotune choice and how it loads."""
    model = meta.get("model_info") or {}
    factory = str(meta["factory"])
    if meta.get("factory_requested") and meta["factory_requested"] != factory:
        factory += f" (asked for {meta['factory_requested']}: {meta.get('factory_note') or 'changed'})"
    metric = {"ip": "ip (inner product: cosine on L2-normalised vectors; higher is closer)",
              "l2": "l2 (squared L2 distance; lower is closer)"}.get(meta["metric"], meta["metric"])
    lines = [
        f"index: {meta['path']}  (format version {meta['format_version']}"
        + (f", version folder {meta['version']})" if meta.get("version") else ", flat layout)"),
        f"items: {meta['ntotal']}  dim: {meta['dim']}",
        f"factory: {factory}",
        f"metric: {metric}",
        f"nprobe: {meta.get('nprobe') if meta.get('nprobe') is not None else '- (exact or graph index)'}",
        f"model: run {model.get('run', '?')}  fingerprint {model.get('fingerprint', '?')}  "
        f"checkpoint {model.get('which', '?')}",
        f"       backbone {model.get('backbone', '?')}  embed_dim {model.get('embed_dim', '?')}  "
        f"image_size {model.get('image_size', '?')}",
        f"created: {meta.get('created', '?')}  (sbirkit {meta.get('sbirkit_version', '?')}, "
        f"faiss {meta.get('faiss_version', '?')})",
        "files: " + ", ".join(f"{name} {_size(n)}" for name, n in sorted(meta.get("files", {}).items())),
    ]
    build = meta.get("build") or {}
    tuned = build.get("autotune")
    if tuned:
        budget = tuned.get("max_memory_bytes")
        param = ", ".join(f"{k} {v}" for k, v in (tuned.get("search_param") or {}).items())
        recall = tuned.get(f"recall@{tuned['k']}")
        lines.append(f"chosen: {tuned.get('kind') or tuned['factory']} for "
                     + (f"--max-memory {_size(budget)}" if budget else "the given factory")
                     + f" (estimated {_size(tuned.get('estimated_bytes') or 0)}); recall@{tuned['k']} "
                     f"{recall:.3f} on {tuned['queries']['held_out']} held-out queries"
                     + (f" at {param}" if param else "") + f", target {tuned['target_recall']:g}"
                     + ("" if tuned.get("target_reached") else " (not reached)"))
    if build:
        lines.append(f"loading: {'memory-mapped' if build.get('mmap') else 'read into memory'}"
                     + (f"; built from {build['source']['kind']} {build['source']['path']}" if build.get("source")
                        else ""))
    if "verified" in meta:
        lines.append("verified: full sha256 of " + ", ".join(sorted(meta["verified"])) + " match meta.json")
    return "\n".join(lines)
