"""The real published checkpoints, downloaded and converted, classify real
ImageNet images about as well as their model zoo says. Slow and online:
`pytest --run_slow tests/checkpoints/test_real_checkpoints.py` (downloads
~240-510 MB per checkpoint from GitHub and the 320 px Imagenette
validation split, ~330 MB, with tensorflow-datasets; skipped without a
network).

Imagenette (fast.ai) holds 10 easy ImageNet classes; its labels are WordNet
ids, mapped here to the 1000-class indices of tfds `imagenet2012`. The
preprocessing is the paper's: shorter side 256 then center crop 224
(`data.augment.center_crop`). On 10 easy classes a correct conversion
scores at least the zoo's clean accuracy on all 1000 classes minus a
margin (`MARGIN`); a wrong channel order, pixel range or BN mapping scores
near chance (the 1000-way argmax rarely lands on the right class).
"""

import socket

import numpy as np
import pytest

import checkpoints

NUM_IMAGES = 100
MARGIN = 0.15


def _online(host="github.com") -> bool:
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def imagenette():
    if not _online():
        pytest.skip("no network: the real checkpoints cannot be downloaded")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from data.augment import center_crop

    wnids = tfds.builder("imagenet2012").info.features["label"].names
    ds, info = tfds.load("imagenette/320px-v2", split="validation",
                         with_info=True, shuffle_files=False)
    names = info.features["label"].names
    index = tf.constant([wnids.index(n) for n in names])
    ds = ds.take(NUM_IMAGES).map(
        lambda e: (center_crop(e["image"]), tf.gather(index, e["label"])))
    x, y = next(iter(ds.batch(NUM_IMAGES)))
    return x.numpy(), y.numpy()


@pytest.mark.slow
@pytest.mark.tensorflow_only  # tensorflow-datasets and the tf.data crop
@pytest.mark.parametrize("name", checkpoints.list_checkpoints())
def test_clean_accuracy_on_real_images(name, imagenette):
    x, y = imagenette
    spec = checkpoints.get(name)
    model = checkpoints.load(name)
    logits = np.concatenate([model.predict(x[i:i + 20], verbose=0)
                             for i in range(0, len(x), 20)])
    acc = float(np.mean(np.argmax(logits, -1) == y))
    assert acc >= spec.clean_acc / 100 - MARGIN, (name, acc)
