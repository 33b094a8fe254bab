"""CAAD / NIPS'17 defense submission mode: real Fashion-MNIST test images
written as PNGs, classified by a CNN trained on Fashion-MNIST, compared with
direct predictions; channel conversion, resizing, and the refusals.
Backend-neutral: PNGs are written with Pillow, the expected conversions
computed with keras.ops."""

import io

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from evaluation.caad_submission import predict_directory

N = 23  # not a multiple of the batch size: the last batch is short


@pytest.fixture(scope="module")
def model(fmnist_cnn):
    return keras.saving.load_model(fmnist_cnn)


@pytest.fixture(scope="module")
def pixels(fmnist_test):
    """uint8 (N, 28, 28, 1) real test images and their float32 [0, 1]
    values, exactly as the fixture holds them."""
    x = fmnist_test[0][:N]
    return np.round(x * 255).astype(np.uint8), x


def _png(image):
    """The PNG bytes of a uint8 (height, width, 1 | 3 | 4) image."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        buffer, format="PNG")
    return buffer.getvalue()


def _write(folder, images, names=None):
    folder.mkdir(exist_ok=True)
    # Names whose sorted order differs from the write order.
    names = names or [f"img_{(7 * i) % len(images):03d}.png"
                      for i in range(len(images))]
    for name, image in zip(names, images):
        (folder / name).write_bytes(_png(image))
    return names


def _read(path):
    rows = [line.split(",") for line in path.read_text().splitlines()]
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows])


def _predict(model, x):
    return np.argmax(model.predict(x, batch_size=64, verbose=0), -1)


def test_matches_direct_predictions(model, pixels, tmp_path):
    u8, x = pixels
    names = _write(tmp_path / "in", u8)
    out = tmp_path / "predictions.csv"
    assert predict_directory(model, tmp_path / "in", out, batch_size=10) == N
    text = out.read_text()
    assert text.endswith("\n") and "filename" not in text  # no header
    files, labels = _read(out)
    assert files == sorted(names)
    order = np.argsort(names)
    np.testing.assert_array_equal(labels, _predict(model, x)[order])
    assert len(set(labels)) > 3  # a trained model, not a constant
    # label_offset shifts every label (1001-class Inception indexing).
    out1 = tmp_path / "offset.csv"
    predict_directory(model, tmp_path / "in", out1, label_offset=1)
    np.testing.assert_array_equal(_read(out1)[1], labels + 1)


def test_rgb_pngs_to_a_gray_model(model, pixels, tmp_path):
    u8, x = pixels
    # Tinted RGB versions of the real images: converting them back to gray
    # with ITU-R 601 weights must be what the model sees.
    rgb = np.round(np.repeat(u8, 3, -1) * np.float32([1.0, 0.9, 0.7]))
    rgb = rgb.astype(np.uint8)
    names = _write(tmp_path / "rgb", rgb)
    out = tmp_path / "rgb.csv"
    predict_directory(model, tmp_path / "rgb", out)
    gray = ops.image.rgb_to_grayscale(rgb.astype(np.float32) / 255.0)
    expected = _predict(model, ops.convert_to_numpy(gray))[
        np.argsort(names)]
    np.testing.assert_array_equal(_read(out)[1], expected)


def test_resizes_to_the_model_input(model, pixels, tmp_path):
    u8, _ = pixels
    big = ops.convert_to_numpy(ops.image.resize(
        u8, (56, 40), interpolation="nearest")).astype(np.uint8)
    names = _write(tmp_path / "big", big)
    out = tmp_path / "big.csv"
    predict_directory(model, tmp_path / "big", out, batch_size=7)
    small = ops.image.resize(big.astype(np.float32) / 255.0, (28, 28),
                             interpolation="bilinear", antialias=True)
    expected = _predict(model, ops.convert_to_numpy(small))[
        np.argsort(names)]
    np.testing.assert_array_equal(_read(out)[1], expected)
    with pytest.raises(ValueError, match=r"differs from the model's input"):
        predict_directory(model, tmp_path / "big", tmp_path / "x.csv",
                          image_size=56)


def test_refuses_to_overwrite(model, pixels, tmp_path):
    _write(tmp_path / "in", pixels[0][:3])
    out = tmp_path / "predictions.csv"
    out.write_text("mine\n")
    with pytest.raises(ValueError, match=r"predictions\.csv.*already exists"):
        predict_directory(model, tmp_path / "in", out)
    assert out.read_text() == "mine\n"


def test_bad_directories(model, pixels, tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(ValueError, match=r"'.*missing' is not a directory"):
        predict_directory(model, tmp_path / "missing", out)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"empty' holds no \*\.png"):
        predict_directory(model, tmp_path / "empty", out)
    _write(tmp_path / "in", pixels[0][:2])
    with pytest.raises(ValueError, match=r"directory of output_csv"):
        predict_directory(model, tmp_path / "in", tmp_path / "no" / "o.csv")
    assert not out.exists()


def test_corrupt_and_unsupported_files(model, pixels, tmp_path):
    u8 = pixels[0][:3]
    out = tmp_path / "out.csv"
    folder = tmp_path / "in"
    _write(folder, u8, ["a.png", "b.png", "c.png"])
    (folder / "d.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(ValueError, match=r"d\.png' is not a PNG file"):
        predict_directory(model, folder, out)
    png = _png(u8[0])
    (folder / "d.png").write_bytes(png[:40])  # truncated after the header
    with pytest.raises(ValueError, match=r"cannot decode PNG '.*d\.png'"):
        predict_directory(model, folder, out)
    rgba = np.concatenate([np.repeat(u8[0], 3, -1), u8[0]], -1)
    (folder / "d.png").write_bytes(_png(rgba))
    with pytest.raises(ValueError, match=r"d\.png' has 4 channels"):
        predict_directory(model, folder, out)
    assert not out.exists()  # nothing half-written


def test_argument_errors(model, pixels, tmp_path):
    _write(tmp_path / "in", pixels[0][:2])
    out = tmp_path / "out.csv"
    for kwargs, match in [({"batch_size": 0}, "batch_size must be"),
                          ({"label_offset": 0.5}, "label_offset must be"),
                          ({"channels": 3}, "channels must be 1 or 3 and "
                                            "match the model's input"),
                          ({"image_size": (28,)}, "image_size must be")]:
        with pytest.raises(ValueError, match=match):
            predict_directory(model, tmp_path / "in", out, **kwargs)
    # A plain callable has no input_shape: channels must be given.
    with pytest.raises(ValueError, match="pass channels="):
        predict_directory(lambda x: model(x), tmp_path / "in", out)
    assert predict_directory(lambda x: model(x), tmp_path / "in", out,
                             channels=1) == 2


def _seen_pixels(folder, n, **kwargs):
    """The images predict_directory gives a model, in filename order."""
    seen = []

    def spy(x):
        seen.append(np.asarray(x))
        return ops.zeros((x.shape[0], 10))

    predict_directory(spy, folder, folder.parent / f"{folder.name}.csv",
                      **kwargs)
    return np.concatenate(seen)[:n]


def test_16_bit_and_palette_pngs_become_8_bit(tmp_path):
    """16-bit samples keep their high byte; a palette becomes RGB (the
    8-bit decoding of libpng that tf.io.decode_png used)."""
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (2, 8, 8), dtype=np.uint16)
    folder = tmp_path / "deep"
    folder.mkdir()
    for i, image in enumerate(deep):
        Image.fromarray(image).save(folder / f"{i}.png")
    got = _seen_pixels(folder, 2, channels=1)
    np.testing.assert_array_equal(
        got[..., 0], (deep >> 8).astype(np.float32) / 255.0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    palette = tmp_path / "palette"
    palette.mkdir()
    Image.fromarray(rgb).quantize(16).save(palette / "p.png")
    expected = np.asarray(Image.open(palette / "p.png").convert("RGB"))
    np.testing.assert_array_equal(_seen_pixels(palette, 1, channels=3)[0],
                                  expected.astype(np.float32) / 255.0)


@pytest.mark.tensorflow_only
def test_decoding_equals_tensorflows(pixels, tmp_path):
    """Pillow decoding + keras.ops conversions give exactly what the former
    tf.io.decode_png / tf.image path gave (gray, RGB, 16-bit, resized)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    files = {"gray.png": pixels[0][0],
             "rgb.png": rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)}
    folder = tmp_path / "in"
    folder.mkdir()
    for name, image in files.items():
        (folder / name).write_bytes(_png(image))
    Image.fromarray(rng.integers(0, 65536, (28, 28), dtype=np.uint16)).save(
        folder / "deep.png")
    for channels in (1, 3):
        for size in (None, (17, 23)):
            got = {}
            for name in sorted(p.name for p in folder.iterdir()):
                one = tmp_path / f"{name}_{channels}_{size}"
                one.mkdir()
                (one / name).write_bytes((folder / name).read_bytes())
                got[name] = _seen_pixels(one, 1, channels=channels,
                                         image_size=size)[0]
            for name, image in got.items():
                ref = tf.cast(tf.io.decode_png((folder / name).read_bytes(),
                                               dtype=tf.uint8),
                              tf.float32) / 255.0
                if ref.shape[-1] == 3 and channels == 1:
                    ref = tf.image.rgb_to_grayscale(ref)
                elif ref.shape[-1] == 1 and channels == 3:
                    ref = tf.image.grayscale_to_rgb(ref)
                if size is not None:
                    ref = tf.clip_by_value(tf.image.resize(
                        ref, size, method="bilinear", antialias=True), 0, 1)
                np.testing.assert_array_equal(image, ref.numpy())
