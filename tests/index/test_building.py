"""index/building.py and index/folder_embedding.py: what `index build`, `index add` and `embed` do,
called as a library. Every check that needs no model comes before the run is loaded (these use a
run folder that does not exist: reaching the model would be a different error)."""

from __future__ import annotations

import pytest

from sbirkit.errors import DataError, UsageError
from sbirkit.index.building import build_index_for
from sbirkit.index.folder_embedding import check_embed_options, embed_folder, embed_folder_to_npz, npz_path
from sbirkit.index.query import ranked_rows


@pytest.mark.parametrize("kwargs, message", [
    ({"modality": "audio"}, "--modality: expected one of photo, sketch, got 'audio'"),
    ({"which": "first"}, "--which: expected one of best, last, got 'first'"),
    ({"batch_size": 0}, "--batch-size: expected a positive integer, got 0"),
])
def test_embed_options_are_one_line_errors(kwargs, message):
    with pytest.raises(UsageError) as err:
        check_embed_options(**kwargs)
    assert str(err.value) == message


def test_the_folder_is_checked_before_the_model_loads(tmp_path):
    missing_run = tmp_path / "no-run"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"empty: expected image files, found none$"):
        embed_folder(missing_run, tmp_path / "empty")
    with pytest.raises(DataError, match="expected a folder of images, found nothing"):
        embed_folder(missing_run, tmp_path / "nowhere")
    (tmp_path / "x.npz").mkdir()
    with pytest.raises(UsageError, match=r"--out .*x.npz: expected a file name, found a folder"):
        embed_folder_to_npz(missing_run, tmp_path / "empty", tmp_path / "x")
    assert npz_path(tmp_path / "x") == tmp_path / "x.npz" and npz_path(tmp_path / "y.npz") == tmp_path / "y.npz"


def test_build_checks_come_in_the_commands_order(tmp_path):
    out = tmp_path / "index"
    with pytest.raises(UsageError, match=r"^--factory, --max-memory: expected one of them"):
        build_index_for(out, factory="Flat", max_memory="1GB", folder=tmp_path, from_embeddings=tmp_path)
    with pytest.raises(UsageError, match=r"^FOLDER .*: --from-embeddings builds from the embeddings"):
        build_index_for(out, folder=tmp_path, from_embeddings=tmp_path)
    with pytest.raises(UsageError, match=r"^RUN FOLDER: expected a run folder and a photo folder"):
        build_index_for(out, folder=tmp_path)
    assert not out.exists()  # nothing written by a refused build


def test_ranked_rows_drop_unfilled_rows_and_keep_ranks():
    import numpy as np

    assert ranked_rows(np.array([0.9, 0.5, -np.inf], dtype=np.float32), np.array([4, 2, -1])) == \
        [(1, 4, pytest.approx(0.9)), (2, 2, 0.5)]
