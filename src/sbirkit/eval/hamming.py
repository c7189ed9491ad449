"""Binary codes ranked by Hamming distance, exactly (integer distances, exact ties).

Hashing methods (ITQ, Sem-PCYC's and ZSCMR's binary rows) rank a gallery of b-bit codes by the
number of differing bits, so a query meets at most b + 1 distinct distances and large ties are
the rule. Any rounding turns those exact ties into noise: cosine distance on +-1 codes divides by
sqrt(b), which is not exact for 32 bits. Here codes become +-1 float32 rows and the distance is
(b - q . g) / 2: every product and partial sum is an integer below 2**24, so the matmul is exact
in float32 whatever its summation order, and so is the result.

Accepted codes: packed bits (``uint8``, e.g. ``np.packbits``; the padding bits of the last byte
are equal in every row and add nothing), ``bool``, or numbers that are all in {-1, +1} or all in
{0, 1} (query and gallery together).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

MAX_BITS = 2**24  # float32 represents every integer up to here exactly


def sign_codes(query: Any, gallery: Any, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """``(query, gallery)`` as +-1 float32 matrices of one code length (see the module docstring)."""
    q, g = _as_tensor(query, "query_emb"), _as_tensor(gallery, "gallery_emb")
    packed = [t.dtype == torch.uint8 for t in (q, g)]
    if any(packed) and not all(packed):
        raise ValueError("query_emb/gallery_emb: expected both packed (uint8) or neither, got "
                         f"{q.dtype} and {g.dtype}")
    if all(packed):
        q, g = (_unpack(t) for t in (q, g))
    elif q.dtype == torch.bool or g.dtype == torch.bool:
        q, g = q.to(torch.int8), g.to(torch.int8)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"gallery_emb: expected codes of {q.shape[1]} bits (as query_emb), got {g.shape[1]}")
    if q.shape[1] > MAX_BITS:
        raise ValueError(f"query_emb: expected at most {MAX_BITS} bits for exact distances, got {q.shape[1]}")
    # two linear passes per side (a torch.unique of a 100,000-code gallery sorts it: ~0.2 s)
    if all(bool(((t == 1) | (t == -1)).all()) for t in (q, g)):
        signs = (q.to(torch.float32), g.to(torch.float32))
    elif all(bool(((t == 0) | (t == 1)).all()) for t in (q, g)):
        signs = (q.to(torch.float32) * 2 - 1, g.to(torch.float32) * 2 - 1)
    else:
        values = torch.unique(torch.cat([torch.unique(q.cpu()), torch.unique(g.cpu())]).to(torch.float64))
        shown = ", ".join(f"{v:g}" for v in values[:6].tolist())
        raise ValueError(f"query_emb/gallery_emb: distance='hamming' expects binary codes (+-1, 0/1, bool or "
                         f"packed uint8), got values {shown}{'...' if len(values) > 6 else ''}")
    return tuple(t.contiguous().to(device) if device is not None else t.contiguous() for t in signs)


def hamming_block(query_signs: Tensor, gallery_signs_t: Tensor) -> Tensor:
    """Hamming distances (float32 integers) between +-1 rows and the columns of a transposed
    +-1 gallery: (bits - q . g) / 2."""
    bits = query_signs.shape[1]
    return torch.mm(query_signs, gallery_signs_t).neg_().add_(bits).mul_(0.5)


def pairwise_hamming(query: Any, gallery: Any) -> Tensor:
    """Dense Hamming distance matrix between two sets of codes (any accepted form)."""
    q, g = sign_codes(query, gallery)
    return hamming_block(q, g.t())


def _as_tensor(value: Any, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value).detach()
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (rows, bits) matrix of codes, got shape {tuple(t.shape)}")
    return t


def _unpack(packed: Tensor) -> Tensor:
    return torch.from_numpy(np.unpackbits(packed.cpu().numpy(), axis=1)).to(packed.device)
