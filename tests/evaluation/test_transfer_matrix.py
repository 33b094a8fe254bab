"""Transfer matrix (Szegedy et al. 2014, Table 3 form) between the session
CNN and an independently trained softmax regression, on real
Fashion-MNIST."""

import json

import keras
import numpy as np
import pytest

import attacks
from evaluation.transfer_matrix import to_markdown, transfer_matrix

PGD = {"name": "pgd", "eps": 0.1, "step_size": 0.01, "steps": 10, "seed": 0}
N, BATCH = 400, 200


@pytest.fixture(scope="module")
def models(fmnist_cnn):
    """The session CNN and a softmax regression trained here for two
    epochs on 20k real training images (a few seconds)."""
    from data.fashion_mnist import load_fashion_mnist

    x, y = load_fashion_mnist("train")
    x = x[:20000, ..., None].astype("float32") / 255.0
    keras.utils.set_random_seed(0)
    linear = keras.Sequential([keras.Input((28, 28, 1)),
                               keras.layers.Flatten(), keras.layers.Dense(10)])
    linear.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.SparseCategoricalCrossentropy(
                       from_logits=True))
    linear.fit(x, y[:20000].astype("int32"), batch_size=200, epochs=2,
               verbose=0)
    return {"cnn": keras.saving.load_model(fmnist_cnn), "linear": linear}


@pytest.fixture(scope="module")
def data(fmnist_test):
    return fmnist_test[0][:N], fmnist_test[1][:N]


@pytest.fixture(scope="module")
def result(models, data):
    return transfer_matrix(models, *data, PGD, batch_size=BATCH)


def test_matrix_shape_and_whitebox_diagonal(result):
    """White-box PGD-10 beats transfer on both targets (error rates
    measured on 400 images: cnn->cnn 0.860, linear->cnn 0.390,
    linear->linear 0.900, cnn->linear 0.392; clean 0.108 / 0.155)."""
    err = np.array(result["error"])
    print("\n" + to_markdown(result))
    assert result["names"] == ["cnn", "linear"]
    assert err.shape == (2, 2) and result["n"] == N
    assert np.all((0 <= err) & (err <= 1))
    for name, clean in result["clean_error"].items():
        assert clean < 0.25, name
    for j in range(2):  # column j: target j; diagonal: white-box
        for i in range(2):
            assert err[j, j] >= err[i, j]
        assert err[j, j] > 0.8  # natural models are not robust at 0.1
    # transfer hurts, but less than white-box
    assert err[1, 0] > result["clean_error"]["cnn"] + 0.1
    assert err[0, 1] > result["clean_error"]["linear"] + 0.1
    for src in ("cnn", "linear"):
        assert result["max_linf"][src] <= 0.1 + 1e-6
        assert 0 < result["mean_l2"][src]
    assert result["target_hit"] is None and result["attack"] == PGD
    json.dumps(result)


def test_cell_equals_direct_recomputation(models, data, result):
    """Row cnn, column linear: PGD crafted on the CNN, evaluated on the
    linear model, recomputed through `attacks.transfer`."""
    x, y = data
    fn = attacks.transfer(attacks.from_config(PGD), models["cnn"])
    x_adv = np.concatenate([np.asarray(fn(models["linear"], x[i:i + BATCH],
                                          y[i:i + BATCH]))
                            for i in range(0, N, BATCH)])
    pred = np.argmax(models["linear"].predict(x_adv, verbose=0), 1)
    assert result["error"][0][1] == float(np.mean(pred != y))
    clean = np.argmax(models["linear"].predict(x, verbose=0), 1)
    assert result["clean_error"]["linear"] == float(np.mean(clean != y))


def test_markdown_names_every_model(result):
    text = to_markdown(result)
    for name in result["names"]:
        assert f"| {name} |" in text
    assert "| clean |" in text and "pgd-10_linf_eps0.1000" in text
    assert text.count("**") == 4  # two bold diagonal cells
    assert len([r for r in text.splitlines() if r.startswith("|")]) == 5


def test_targeted_single_model(models, data):
    x, y = data
    out = transfer_matrix({"cnn": models["cnn"]}, x[:100], y[:100],
                          dict(PGD, targeted=True, eps=0.3, step_size=0.03),
                          batch_size=50)
    hit = np.array(out["target_hit"])
    assert hit.shape == (1, 1) and hit[0, 0] > 0.8
    assert out["error"][0][0] >= hit[0, 0]  # a hit target is an error


@pytest.mark.parametrize("bad,match", [
    (lambda m, x, y: ({}, x, y, PGD), "at least one"),
    (lambda m, x, y: ([m["cnn"]], x, y, PGD), "at least one"),
    (lambda m, x, y: ({"cnn": "model.keras"}, x, y, PGD), "callable"),
    (lambda m, x, y: ({"": m["cnn"]}, x, y, PGD), "non-empty strings"),
    (lambda m, x, y: (m, x, y[:-1], PGD), "same number"),
    (lambda m, x, y: (m, x[..., 0], y, PGD), "height, width, channels"),
    (lambda m, x, y: (m, x, y.astype("float32"), PGD), "int labels"),
    (lambda m, x, y: (m, x, y, {"eps": 0.1}), "'name'"),
])
def test_bad_inputs_raise(models, data, bad, match):
    with pytest.raises(ValueError, match=match):
        transfer_matrix(*bad(models, *data))


def test_class_count_mismatch_and_batch_size(models, data):
    five = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="same number of classes"):
        transfer_matrix({"cnn": models["cnn"], "five": five}, *data, PGD)
    with pytest.raises(ValueError, match="batch_size"):
        transfer_matrix(models, *data, PGD, batch_size=0)
    with pytest.raises(ValueError, match="missing"):
        to_markdown({"names": ["cnn"]})
