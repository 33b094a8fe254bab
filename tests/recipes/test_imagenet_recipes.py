"""The ImageNet recipes of Xie et al. 2019 (arXiv 1812.03411):
denoise_resnet152, resnet152_baseline and denoise_all_resnext101.

Their smoke variants train end to end through train.py here (the generic
smoke loop of tests/test_train_smoke.py leaves them to this file); the full
configs are checked against the paper's protocol: the published models and
parameter counts, the tfds imagenet2012 pipeline read from a manual dir (a
miniature ImageNet of real tars, no network), the LR at the schedule's key
steps, and the training / evaluation attacks.
"""

import io
import json
import tarfile

import keras
import numpy as np
import pytest

import data
import models
from training import optimization
import recipes
from core import backends
from tests.train_utils import run_train
from training.adversarial import AdversarialTrainer

NAMES = ("denoise_resnet152", "resnet152_baseline", "denoise_all_resnext101")
# (model, denoise hook, trainable parameters with 1000 classes): the
# released R152-Denoise.npz, R152.npz and X101-DenoiseAll.npz.
PUBLISHED = {
    "denoise_resnet152": ("resnet152", {"kind": "gaussian", "embed": True,
                                        "where": "after_stage"}, 71_341_608),
    "resnet152_baseline": ("resnet152", None, 60_192_808),
    "denoise_all_resnext101": ("resnext101_32x8d", {
        "kind": "dot_product", "embed": False, "where": "after_block"},
        126_801_704),
}
STEPS_PER_EPOCH = 1_281_167 // 4096  # 312, as train.py computes it


def _mirrored_replicas():
    """Replicas of the "mirrored" strategy: TensorFlow's 2 logical CPUs
    (tests/conftest.py); under JAX, DataParallel over the local devices."""
    if backends.BACKEND == "tensorflow":
        return 2
    import jax

    return len(jax.devices())


def _denoise_layers(model):
    return [l.name for l in model.layers if l.name.endswith("_denoise")]


# --- smoke runs through train.py ---------------------------------------------


@pytest.mark.parametrize("recipe, strategy, denoise_blocks", [
    ("denoise_resnet152:smoke", "mirrored", 4),      # one per stage
    ("resnet152_baseline:smoke", "one_device", 0),
    ("denoise_all_resnext101:smoke", "one_device", 5),  # one per block
])
def test_smoke_recipe_trains(tmp_path, recipe, strategy, denoise_blocks):
    """2 steps of targeted PGD-2 training with random targets and clean
    starts, then validation and saving; under 2-CPU mirrored the global
    batch is overridden to 8 on the command line and the LR follows it."""
    batch = 8 if strategy == "mirrored" else 4
    run_train(tmp_path, recipe, f"--recipe.data.global_batch_size={batch}",
              strategy=strategy)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["optimizer"]["learning_rate"] == pytest.approx(
        0.1 * batch / 256)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert np.isfinite(summary["final_logs"]["loss"])
    assert summary["steps_per_epoch"] == 2
    assert summary["replicas"] == (
        _mirrored_replicas() if strategy == "mirrored" else 1)
    net = keras.saving.load_model(tmp_path / "model.keras")
    assert net.input_shape == (None, 64, 64, 3)
    assert len(_denoise_layers(net)) == denoise_blocks
    if "resnext" in recipe:
        assert net.get_layer("stage2_block1_conv2").groups == 32


# --- the full configs --------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_full_config_builds_the_published_model(name):
    cfg = recipes.get_config(name)
    arch, denoise, params = PUBLISHED[name]
    kwargs = cfg.model.kwargs.to_dict()
    assert cfg.model.name == arch and kwargs.get("denoise") == denoise
    assert kwargs["mean"] == kwargs["std"] == (0.5, 0.5, 0.5)  # [-1, 1]
    info = data.get_info(cfg.data.name)
    net = models.create_model(cfg.model.name, num_classes=info.num_classes,
                              input_shape=(224, 224, 3), **kwargs)
    assert sum(int(np.prod(w.shape)) for w in net.trainable_weights) == params


def _jpeg(seed, height, width):
    import tensorflow as tf

    pixels = np.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


def _add(archive, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def _miniature_imagenet(directory):
    """ILSVRC2012_img_{train,val}.tar in the official layout (per-synset
    tars of JPEGs; val JPEGs labelled by tfds's own table), 4 + 3 images."""
    with tarfile.open(directory / "ILSVRC2012_img_train.tar", "w") as outer:
        for k, synset in enumerate(("n01440764", "n01443537")):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                for i in range(2):
                    _add(inner, f"{synset}_{i}.JPEG",
                         _jpeg(10 * k + i, 40 + 20 * i, 50))
            _add(outer, f"{synset}.tar", buffer.getvalue())
    with tarfile.open(directory / "ILSVRC2012_img_val.tar", "w") as val:
        for i in range(1, 4):
            _add(val, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(100 + i, 60, 45))


@pytest.mark.tensorflow_only  # tensorflow-datasets and tf.data
def test_data_is_tfds_imagenet2012_prepared_from_the_manual_dir(
        tmp_path, monkeypatch):
    """The recipe's data section, passed as train.py passes it, prepares
    tfds imagenet2012 from the tars in `data.data_dir` (no network) and
    yields 224 x 224 RGB crops in [0, 1] with ImageNet labels."""
    import tensorflow as tf

    from data import tfds_datasets

    def no_network(url, timeout=5.0):
        raise AssertionError("ImageNet must never touch the network")

    monkeypatch.setattr(tfds_datasets, "_network_available", no_network)
    monkeypatch.delenv(tfds_datasets.IMAGENET_ENV, raising=False)
    _miniature_imagenet(tmp_path)
    cfg = recipes.get_config("denoise_resnet152")
    assert (cfg.data.name, cfg.data.image_size) == ("imagenet2012", 224)
    assert cfg.data.augment and cfg.data.channels is None
    cfg.data.data_dir = str(tmp_path)  # --recipe.data.data_dir=...
    common = dict(data_dir=cfg.data.data_dir, image_size=cfg.data.image_size,
                  channels=cfg.data.channels)
    train = data.get_dataset(cfg.data.name, "train", batch_size=2,
                             shuffle=True, augment=cfg.data.augment, seed=0,
                             drop_remainder=True, repeat=True, **common)
    x, y = next(iter(train))
    assert x.shape == (2, 224, 224, 3) and x.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert set(y.numpy()) <= {0, 1}  # n01440764, n01443537
    x, y = next(iter(data.get_dataset(cfg.data.name, "test", batch_size=3,
                                      **common)))
    assert x.shape == (3, 224, 224, 3)
    assert (tmp_path / "imagenet2012").is_dir()  # TFRecords prepared there


@pytest.mark.parametrize("name", NAMES)
def test_protocol_and_schedule_at_key_steps(name):
    cfg = recipes.get_config(name)
    assert cfg.data.global_batch_size == 32 * 128
    assert cfg.train.epochs == 110 and cfg.train.alpha == 0.0
    assert cfg.train.label_smoothing == 0.1
    optimizer = optimization.build_optimizer(
        cfg.optimizer, cfg.schedule, STEPS_PER_EPOCH, cfg.train.epochs)
    assert isinstance(optimizer, optimization.L2SGD)
    assert optimizer.l2 == 1e-4 and optimizer.weight_decay is None
    assert optimizer.nesterov and optimizer.momentum == 0.9
    lr = optimization.build_schedule(cfg.optimizer, cfg.schedule,
                                     STEPS_PER_EPOCH, cfg.train.epochs)
    warmup = 5 * STEPS_PER_EPOCH
    expected = {0: 0.1, warmup // 2: 0.1 + 1.5 * (warmup // 2) / warmup,
                warmup: 1.6, 35 * STEPS_PER_EPOCH: 1.6,
                35 * STEPS_PER_EPOCH + 1: 0.16, 70 * STEPS_PER_EPOCH + 1:
                0.016, 95 * STEPS_PER_EPOCH + 1: 0.0016,
                110 * STEPS_PER_EPOCH - 1: 0.0016}
    for step, value in expected.items():
        assert float(lr(step)) == pytest.approx(value, rel=1e-5), step


def test_lr_tracks_the_batch_unless_set_itself():
    cfg = recipes.get_config("denoise_resnet152")
    assert cfg.optimizer.learning_rate == pytest.approx(1.6)
    cfg.data.global_batch_size = 256  # one 8-GPU machine
    assert cfg.optimizer.learning_rate == pytest.approx(0.1)
    cfg.optimizer.learning_rate = 0.2
    cfg.data.global_batch_size = 512
    assert cfg.optimizer.learning_rate == 0.2


@pytest.mark.parametrize("name", NAMES)
def test_training_and_evaluation_attacks(name):
    cfg = recipes.get_config(name)
    attack = cfg.attack.to_dict()
    assert attack == {
        "name": "pgd", "eps": pytest.approx(16 / 255),
        "step_size": pytest.approx(1 / 255), "steps": 30, "norm": "inf",
        "rand_init": True, "targeted": True, "restarts": 1,
        "target": "random", "prob_start_from_clean": 0.2}
    net = models.create_model("resnet20", num_classes=10, width=8,
                              blocks=(1, 1, 1))
    AdversarialTrainer(net, attack=attack)  # the trainer accepts it
    evaluation = cfg.eval.attack
    assert evaluation.targeted and evaluation.rand_init
    assert evaluation.steps == 10 and evaluation.eps == pytest.approx(16 / 255)
    assert evaluation.step_size == pytest.approx(1.6 / 255)  # max(1, 16/10)
