"""word2vec / GloVe class vectors: exact values read from tiny files in the three formats."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest

from sbirkit.data import DataError
from sbirkit.semantics import class_vectors, read_word_vectors

AWKWARD = float(np.frombuffer(b"\n \n ", dtype="<f4")[0])


def vectors(names, path, **options):
    return class_vectors(names, "word2vec", path=path, normalize=False, cache=False, **options)


def test_glove_text_exact_values(glove_file):
    names = ["cat", "teddy_bear", "car_(sedan)", "airplane", "Sheep", "hot dog", "T-Shirt", "zebra"]
    table = vectors(names, glove_file)
    assert table.names == names and table.dim == 3 and table.vectors.dtype == np.float32
    expected = [
        [1, 0, 0],  # cat (the earlier "cat food" token is not "cat")
        [0.5, 0.5, 1.0],  # mean(teddy, bear): no phrase token in the GloVe file
        [1, 1, 0],  # car_(sedan) -> "car sedan" -> mean(car, sedan)
        [0, 0, 1],  # only "Airplane" in the file: case-insensitive fallback
        [1, 2, 3],  # "sheep" exact wins over the earlier "Sheep"
        [5, 5, 5],  # joined form "hotdog"
        [3, 3, 3],  # hyphen-joined form "t-shirt"
        [AWKWARD, -1.5, 0.25],
    ]
    np.testing.assert_array_equal(table.vectors, np.asarray(expected, dtype=np.float32))
    assert table.missing == [] and table.partial == [] and table.source == "word2vec"


def test_glove_source_name_and_normalised_rows(glove_file):
    table = class_vectors(["cat", "teddy bear"], "glove", path=glove_file, cache=False)
    assert table.source == "glove" and table.normalized
    np.testing.assert_allclose(table.vectors[1], np.array([0.5, 0.5, 1.0]) / np.sqrt(1.5), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(table.vectors, axis=1), 1.0, rtol=1e-6)


def test_word2vec_text_with_header_prefers_phrase_token(w2v_text_file):
    table = vectors(["teddy-bear", "dog", "AIRPLANE"], w2v_text_file)
    np.testing.assert_array_equal(table.vectors, np.array([[4, 0, 4], [0, 1, 0], [0, 0, 1]], dtype=np.float32))


@pytest.mark.parametrize("newline", [True, False])
def test_word2vec_binary_matches_text(tmp_path, w2v_text_file, write_binary, binary_vocab, newline):
    path = write_binary(tmp_path / "v.bin", binary_vocab, newline=newline)
    names = ["teddy_bear", "car_(sedan)", "airplane", "sheep", "hot_dog", "t-shirt", "zebra", "cat"]
    binary, text = vectors(names, path), vectors(names, w2v_text_file)
    np.testing.assert_array_equal(binary.vectors, text.vectors)
    assert binary.vectors[0].tolist() == [4, 0, 4] and binary.vectors[6][0] == np.float32(AWKWARD)


def test_binary_fixture_and_format_override(tmp_path, w2v_binary_file):
    moved = tmp_path / "vectors.w2v"  # no .bin suffix: auto would read it as text
    moved.write_bytes(w2v_binary_file.read_bytes())
    table = vectors(["cat", "dog"], moved, format="binary")
    np.testing.assert_array_equal(table.vectors, np.eye(3, dtype=np.float32)[:2])
    with pytest.raises(ValueError, match="format: expected one of"):
        vectors(["cat"], moved, format="gensim")


def test_gzipped_text_file(gz_text_file):
    table = vectors(["car_(sedan)", "sheep"], gz_text_file)
    np.testing.assert_array_equal(table.vectors, np.array([[1, 1, 0], [1, 2, 3]], dtype=np.float32))


def test_missing_name_is_an_error_naming_file_and_names(glove_file):
    with pytest.raises(DataError) as err:
        vectors(["cat", "wine_glass", "Unicorn"], glove_file)
    message = str(err.value)
    assert str(glove_file) in message and "'wine_glass'" in message and "'Unicorn'" in message
    assert "\n" not in message and "cat'" not in message


def test_missing_warn_keeps_nan_rows_never_zero(glove_file):
    with pytest.warns(UserWarning, match="wine_glass"):
        table = class_vectors(["cat", "wine_glass", "dog"], "glove", path=glove_file, on_missing="warn", cache=False)
    assert table.missing == ["wine_glass"] and table.names == ["cat", "wine_glass", "dog"]
    assert np.isnan(table.vectors[1]).all() and np.isfinite(table.vectors[[0, 2]]).all()
    assert table.present.tolist() == [True, False, True]
    np.testing.assert_array_equal(table.vector("dog"), [0, 1, 0])


def test_missing_drop_leaves_the_class_out(glove_file):
    with pytest.warns(UserWarning, match="left out"):
        table = class_vectors(["cat", "wine_glass", "dog"], "glove", path=glove_file, on_missing="drop", cache=False)
    assert table.names == ["cat", "dog"] and table.missing == ["wine_glass"]
    np.testing.assert_array_equal(table.vectors, np.eye(3, dtype=np.float32)[:2])


def test_partial_multiword_uses_found_words_and_is_reported(glove_file):
    with pytest.warns(UserWarning, match="only partly covered.*alarm_clock"):
        table = vectors(["alarm_clock", "cat"], glove_file)
    assert table.partial == ["alarm_clock"] and table.missing == []
    np.testing.assert_array_equal(table.vectors[0], [1, 0, 1])


def test_no_warning_when_everything_is_covered(glove_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        table = vectors(["cat", "dog"], glove_file)
    assert table.missing == [] and table.partial == []


def test_reading_stops_once_all_tokens_have_exact_matches(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("cat 1 2\ndog 3 4\nbroken 5\n", encoding="utf-8")
    table = read_word_vectors(path, {"cat", "dog"})
    assert set(table.exact) == {"cat", "dog"} and table.dim == 2
    with pytest.raises(DataError, match=r"big.txt: line 3: expected a word and 2 numbers, got 1 fields"):
        read_word_vectors(path, {"cat", "broken"})


def test_bad_number_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("cat 1 2\ndog 3 x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt: line 2: vector of 'dog': expected 2 numbers"):
        read_word_vectors(path, {"dog"})


def test_header_count_mismatch_is_reported(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("3 2\ncat 1 2\ndog 3 4\n", encoding="utf-8")
    with pytest.raises(DataError, match="header says 3 words, the file has 2"):
        read_word_vectors(path, {"cat", "horse"})


def test_truncated_binary_is_reported(tmp_path, write_binary):
    path = write_binary(tmp_path / "t.bin", [("cat", [1, 0, 0]), ("dog", [0, 1, 0])])
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(DataError, match=r"t.bin: word 2 of 2 \('dog'\): expected 12 bytes"):
        read_word_vectors(path, {"horse"})
    counted = write_binary(tmp_path / "c.bin", [("cat", [1, 0, 0])], count=2)
    with pytest.raises(DataError, match=r"c.bin: word 2 of 2"):
        read_word_vectors(counted, {"horse"})


def test_binary_without_header_is_an_error(tmp_path):
    path = tmp_path / "nohead.bin"
    path.write_bytes(b"cat " + np.ones(3, "<f4").tobytes())
    with pytest.raises(DataError, match="nohead.bin: line 1: expected a word2vec binary header"):
        read_word_vectors(path, {"cat"})


def test_missing_file_and_path_option(tmp_path):
    with pytest.raises(DataError, match="nothere.txt: word vector file: expected an existing file"):
        vectors(["cat"], tmp_path / "nothere.txt")
    with pytest.raises(ValueError, match="option path"):
        class_vectors(["cat"], "glove", cache=False)


def test_gz_binary(tmp_path, write_binary):
    raw = write_binary(tmp_path / "v.bin", [("cat", [1, 2, 3]), ("dog", [4, 5, 6])])
    packed = tmp_path / "v.bin.gz"
    packed.write_bytes(gzip.compress(raw.read_bytes()))
    np.testing.assert_array_equal(vectors(["dog"], packed).vectors, [[4, 5, 6]])
