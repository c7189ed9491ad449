"""Bad input to a data-free run keeps its one-line error, naming the field and what was expected:
a teacher that does not load (a missing run, missing DoodleNet weights), a class map that is not
there or names a class the teacher does not have (the shipped imagenet-quickdraw map on a teacher
without ImageNet's classes), a diagnosis-only reference that is not a folder of images, and
averaging weights across two architectures (DoodleNet + EfficientNet-Lite0 meet it). (The
checkpoint that does not load, the class count that disagrees and an inline map naming an unknown
class are in test_crossx_dfl.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sbirkit.engine import Trainer
from sbirkit.errors import SbirkitError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dfl_helpers import DATA, teacher, tiny_config, warm_root  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return warm_root(tmp_path_factory, "dfl_bad_input")


def _error(base: Path, name: str, *extra: str) -> str:
    with pytest.raises(SbirkitError) as info:
        Trainer(tiny_config(*extra), base / name)._build()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_a_teacher_run_that_is_not_there(base, tmp_path):
    missing = tmp_path / "no-run"
    assert _error(base, "run", f"method.photo_teacher={{run: {missing}}}") == \
        f"method.photo_teacher: {missing}: run directory not found"


def test_doodlenet_weights_that_are_not_there(base, tmp_path):
    missing = tmp_path / "doodleNet-model.h5"
    message = _error(base, "weights", f"method.sketch_teacher={{pretrained: doodlenet, weights: {missing}}}")
    assert message.startswith(f"method.sketch_teacher: {missing}: weights: expected the DoodleNet Keras file")
    assert message.endswith("no such file")


def test_a_class_map_that_is_not_shipped_nor_a_file(base):
    message = _error(base, "map", f"method.photo_teacher={teacher('photo')[:-1]}, class_map: no-such-map}}")
    assert message == ("method.photo_teacher: 'no-such-map': expected a shipped class map (imagenet-cifar10, "
                       "imagenet-quickdraw, quickdraw-cifar10) or a YAML file")


def test_the_shipped_map_on_a_teacher_without_its_classes(base):
    message = _error(base, "shipped", f"method.photo_teacher={teacher('photo')[:-1]}, class_map: imagenet-quickdraw}}")
    assert "imagenet-quickdraw.yaml: map.aircraft carrier: 'aircraft carrier' is not a class" in message
    assert "is not a class of the photo teacher method.photo_teacher" in message and message.endswith("(4 classes)")


def test_a_reference_that_is_not_a_folder_of_images(base, tmp_path):
    missing = tmp_path / "photos"
    assert _error(base, "ref", f"method.reference={{photos: {missing}}}") == \
        f"method.reference.photos: {missing}: expected a folder of images (a real reference, for diagnosis only)"
    assert _error(base, "refkey", "method.reference={photo: /x}") == \
        "method.reference.photo: unknown key; expected some of data, photos, size, sketches, split"


def test_averaging_teachers_of_two_architectures(base):
    """``averaging`` needs one architecture (the real teachers, DoodleNet and EfficientNet-Lite0, are
    refused this way): a sketch teacher on ``tiny_cnn`` beside a ``tiny_cnn_wide`` photo teacher."""
    narrow = ("{preset: classifier-synthetic-sketch, overrides: [train.steps=4, train.batch_size=8, "
              f"train.eval_every=4, train.progress=false, 'data.options={DATA}', model.backbone=tiny_cnn]}}")
    message = _error(base, "avg", "method.variant=averaging", "method.student_init=none",
                     f"method.sketch_teacher={narrow}")
    assert message.startswith("method.variant=averaging: expected two teachers of one architecture (same weight "
                              "names and shapes); got ")
