"""`checkpoints.adapt`: new input size, new head, frozen stages."""

import numpy as np
import pytest

import checkpoints
import models


@pytest.fixture(scope="module")
def small_resnet():
    return models.create_model("resnet50", num_classes=10,
                               input_shape=(32, 32, 3), width=8,
                               blocks=(1, 1, 1, 1))


def _weights_by_name(model):
    return {w.path: np.asarray(w) for layer in model.layers
            for w in layer.weights}


def test_new_head_new_size_all_else_kept(small_resnet):
    out = checkpoints.adapt(small_resnet, input_shape=(40, 40, 3),
                            num_classes=5)
    assert out.input_shape == (None, 40, 40, 3)
    assert out.output_shape == (None, 5)
    old, new = _weights_by_name(small_resnet), _weights_by_name(out)
    kept = [k for k in old if not k.startswith("logits/")]
    assert kept and all(np.array_equal(old[k], new[k]) for k in kept)
    assert new["logits/kernel"].shape == (old["logits/kernel"].shape[0], 5)
    assert not np.any(new["logits/bias"])
    # same weights at another size: the features of the two models agree on
    # an input that both can take, so nothing else changed
    x = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    same = checkpoints.adapt(small_resnet, input_shape=(32, 32, 3),
                             num_classes=10)
    np.testing.assert_allclose(same(x), small_resnet(x), atol=1e-5)


def test_same_class_count_keeps_the_head(small_resnet):
    out = checkpoints.adapt(small_resnet, input_shape=(48, 48, 3),
                            num_classes=10)
    np.testing.assert_array_equal(
        np.asarray(out.get_layer("logits").kernel),
        np.asarray(small_resnet.get_layer("logits").kernel))


def test_freeze_prefixes(small_resnet):
    out = checkpoints.adapt(small_resnet, input_shape=(32, 32, 3),
                            num_classes=3, freeze=("stem", "stage2"))
    frozen = {layer.name for layer in out.layers if not layer.trainable}
    assert "stem_conv" in frozen and "stage2_block1_conv1" in frozen
    assert "stage3_block1_conv1" not in frozen and "logits" not in frozen
    trainable = {w.path.split("/")[0] for w in out.trainable_weights}
    assert not any(n.startswith(("stem", "stage2")) for n in trainable)


def test_errors(small_resnet):
    with pytest.raises(ValueError, match="data.channels=3"):
        checkpoints.adapt(small_resnet, input_shape=(28, 28, 1),
                          num_classes=10)
    with pytest.raises(ValueError, match="matches no layer.*stage3"):
        checkpoints.adapt(small_resnet, input_shape=(32, 32, 3),
                          num_classes=10, freeze=("block9",))
    with pytest.raises(ValueError, match="num_classes must be a positive"):
        checkpoints.adapt(small_resnet, input_shape=(32, 32, 3),
                          num_classes=0)
