"""checkpoints.convert_tensorpack on tiny synthetic tensorpack checkpoints.

The `.npz` files are written here with the naming rules of the reference
code (Xie et al. 2019, arXiv 1812.03411), scaled down; the converted model
is checked tensor by tensor and against an independent NCHW forward pass
written with tensorpack's conventions (BGR, `x / 127.5 - 1`, NCHW, SAME
padding, stride on the 3x3, BN epsilon 1e-5). The full-size name lists in
`data/` (copied from the feature-denoising notes) check the mapping of the
real R152, R152-Denoise and X101-DenoiseAll checkpoints.
"""

import pathlib

import numpy as np
import pytest
from keras import ops

from checkpoints import convert_tensorpack as ct

DATA = pathlib.Path(__file__).parent / "data"
SHAPE = (64, 64, 3)  # stage 5 is 2x2: every non-local op mixes
# name: (blocks, width, groups, width_per_group, denoise placement)
ARCHS = {
    "resnet": ((2, 1, 1, 1), 8, 1, 64, None),
    "resnet_denoise": ((1, 2, 1, 1), 8, 1, 64, "stage"),
    "resnext_denoise_all": ((1, 1, 2, 1), 8, 4, 16, "block"),
}
DENOISE = {
    None: None,
    "stage": {"kind": "gaussian", "embed": True, "where": "after_stage"},
    "block": {"kind": "dot_product", "embed": False, "where": "after_block"},
}
CLASSES = 5
LOGIT_STD = 2.0  # of the Gaussian non-local softmax logits
DENOISE_GAMMA = 0.2  # scale of the denoise BN gammas (trained from 0)


def make_tensors(arch, seed=0):
    """A tensorpack-named checkpoint dict with random float32 values.

    Conv kernels are He-normal; BN gammas are +-[0.5, 1.5], and
    `DENOISE_GAMMA` times that in the denoise blocks (never the 0 init, so
    every residual and denoise branch matters); betas are random. The BN
    moving statistics and the embedding scale come from a calibration
    batch, randomly perturbed (like a trained network's), so activations
    stay O(1) and float32 rounding is not amplified through the cubic
    dot-product and the softmax blocks."""
    blocks, width, groups, wpg, denoise = ARCHS[arch]
    rng = np.random.default_rng(seed)
    t = {}

    def conv(scope, k, cin, cout, split=1, gamma=1.0):
        std = np.sqrt(2.0 / (k * k * cin / split))
        t[f"{scope}/W"] = rng.normal(0, std, (k, k, cin // split, cout))
        t[f"{scope}/bn/gamma"] = gamma * rng.uniform(0.5, 1.5, cout) * (
            rng.choice([-1, 1], cout))
        t[f"{scope}/bn/beta"] = rng.normal(0, 0.2, cout)

    conv("conv0", 7, 3, width)
    cin = width
    for g, n in enumerate(blocks):
        planes = width * 2**g
        inner, out = int(planes * wpg / 64) * groups, 4 * planes
        for b in range(n):
            p = f"group{g}/block{b}"
            conv(f"{p}/conv1", 1, cin, inner)
            conv(f"{p}/conv2", 3, inner, inner, split=groups)
            conv(f"{p}/conv3", 1, inner, out)
            if cin != out:
                conv(f"{p}/convshortcut", 1, cin, out)
            if denoise == "block":
                conv(f"{p}/non_local/conv", 1, out, out, gamma=DENOISE_GAMMA)
            cin = out
        if denoise == "stage":
            for e in ("theta", "phi"):
                t[f"group{g}_denoise/embedding_{e}/W"] = rng.normal(
                    0, 1 / np.sqrt(out), (1, 1, out, out // 2))
            conv(f"group{g}_denoise/conv", 1, out, out, gamma=DENOISE_GAMMA)
    t["linear/W"] = rng.normal(0, 1 / np.sqrt(cin), (cin, CLASSES))
    t["linear/b"] = rng.normal(0, 0.1, CLASSES)
    calibration = rng.integers(0, 256, (4, *SHAPE))
    reference_logits(t, calibration, arch, stats_rng=rng)
    return {k: v.astype(np.float32) for k, v in t.items()}


# ---- the reference forward pass, tensorpack style (NCHW, BGR, [-1, 1]) ----
def _conv(x, w, stride=1, groups=1):
    """NCHW conv with TF SAME padding; grouped by splitting channels.

    TF's CPU conv has no NCHW (and, with oneDNN, no float64) kernel, and
    JAX computes in float32: the op (`keras.ops.conv`, SAME padding as TF
    pads it) runs in float32 NHWC between two transposes; the rest is
    float64."""
    nhwc = np.transpose(x, (0, 2, 3, 1)).astype(np.float32)
    xs = np.split(nhwc, groups, axis=3)
    ws = np.split(np.asarray(w, np.float32), groups, axis=3)
    y = np.concatenate([ops.convert_to_numpy(ops.conv(a, k, stride, "same"))
                        for a, k in zip(xs, ws)], axis=3)
    return np.transpose(y, (0, 3, 1, 2)).astype(np.float64)


def _conv_bn(x, t, scope, stride=1, groups=1, stats_rng=None):
    """`scope/W` conv, then inference BN `scope/bn/*` (epsilon 1e-5).

    With `stats_rng`, first sets the BN moving statistics from the conv
    output (per channel, randomly perturbed): calibration only."""
    x = _conv(x, t[f"{scope}/W"], stride, groups)
    if stats_rng is not None:
        c = x.shape[1]
        # The second moment, not the variance, as the scale: a branch that
        # is nearly constant (a smooth non-local average) is then not blown
        # up, nor is float32 rounding noise with it.
        rms = np.sqrt(np.maximum((x**2).mean(axis=(0, 2, 3)),
                                 1e-2 * (x**2).mean()))
        t[f"{scope}/bn/mean/EMA"] = (x.mean(axis=(0, 2, 3))
                                     + stats_rng.normal(0, 0.1, c) * rms)
        t[f"{scope}/bn/variance/EMA"] = rms**2 * stats_rng.uniform(0.7, 1.5, c)

    def stat(name):
        return t[f"{scope}/bn/{name}"].astype(np.float64)[None, :, None, None]

    return ((x - stat("mean/EMA")) / np.sqrt(stat("variance/EMA") + 1e-5)
            * stat("gamma") + stat("beta"))


def _non_local(x, t, scope, embed, softmax, stats_rng):
    """`x + BN(conv1x1(D(x)))` with D in the NCHW formulation."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)  # [B, C, N]
    theta = phi = f
    if embed:
        theta, phi = (np.einsum("io,bin->bon", t[f"{scope}/embedding_{e}/W"]
                                [0, 0].astype(np.float64), f)
                      for e in ("theta", "phi"))
    affinity = np.einsum("bci,bcj->bij", theta, phi)  # theta^T phi
    if embed and stats_rng is not None:  # calibration: set the logit std
        scale = LOGIT_STD / (affinity / np.sqrt(theta.shape[1])).std()
        for e in ("theta", "phi"):
            t[f"{scope}/embedding_{e}/W"] *= np.sqrt(scale)
        theta, affinity = theta * np.sqrt(scale), affinity * scale
    if softmax:  # over the keys j, scaled by sqrt(channels of theta)
        logits = affinity / np.sqrt(theta.shape[1])
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        y = np.einsum("bij,bcj->bci", weights, f)
    else:
        y = np.einsum("bij,bcj->bci", affinity, f) / (h * w)
    return x + _conv_bn(y.reshape(b, c, h, w), t, f"{scope}/conv",
                        stats_rng=stats_rng)


def reference_logits(t, rgb_uint8, arch, stats_rng=None):
    """Logits of the tensorpack network for 0..255 RGB images, float64.

    Reads every weight from `t` by its tensorpack name. `stats_rng` fills
    in the BN moving statistics (used by `make_tensors` only)."""
    blocks, _, groups, _, denoise = ARCHS[arch]
    x = rgb_uint8[..., ::-1].astype(np.float64) / 127.5 - 1.0  # BGR, [-1, 1]
    x = np.transpose(x, (0, 3, 1, 2))  # NCHW
    kw = {"stats_rng": stats_rng}
    x = np.maximum(_conv_bn(x, t, "conv0", 2, **kw), 0)
    x = ops.max_pool(np.transpose(x, (0, 2, 3, 1)).astype(np.float32), 3, 2,
                     "same")
    x = np.transpose(ops.convert_to_numpy(x), (0, 3, 1, 2)).astype(np.float64)
    for g, n in enumerate(blocks):
        for b in range(n):
            p, stride = f"group{g}/block{b}", 2 if g > 0 and b == 0 else 1
            y = np.maximum(_conv_bn(x, t, f"{p}/conv1", **kw), 0)
            y = np.maximum(_conv_bn(y, t, f"{p}/conv2", stride, groups, **kw),
                           0)
            y = _conv_bn(y, t, f"{p}/conv3", **kw)
            if f"{p}/convshortcut/W" in t:
                x = _conv_bn(x, t, f"{p}/convshortcut", stride, **kw)
            x = np.maximum(x + y, 0)
            if denoise == "block":
                x = _non_local(x, t, f"{p}/non_local", False, False, **kw)
        if denoise == "stage":
            x = _non_local(x, t, f"group{g}_denoise", True, True, **kw)
    return x.mean(axis=(2, 3)) @ t["linear/W"] + t["linear/b"]


# ---- fixtures ----
def _save(path, tensors, suffix=""):
    np.savez(path, **{k + suffix: v for k, v in tensors.items()})
    return path


@pytest.fixture(scope="module", params=sorted(ARCHS))
def converted(request, tmp_path_factory):
    """(arch, tensors, model converted from an .npz with `:0` keys)."""
    arch = request.param
    tensors = make_tensors(arch)
    path = _save(tmp_path_factory.mktemp(arch) / f"{arch}.npz", tensors,
                 suffix=":0")
    return arch, tensors, ct.convert(path, input_shape=SHAPE)


def test_infer_architecture_small(converted):
    arch, tensors, _ = converted
    blocks, width, groups, wpg, denoise = ARCHS[arch]
    got = ct.infer_architecture(tensors)
    assert got == {
        "name": "resnet50" if groups == 1 else "resnext50_32x4d",
        "blocks": blocks, "width": width, "groups": groups,
        "width_per_group": wpg, "num_classes": CLASSES,
        "denoise": DENOISE[denoise]}


def test_every_tensor_lands_in_its_keras_weight(converted):
    _, tensors, model = converted
    mapping = ct.name_map(model)
    assert set(mapping) == set(tensors)
    assert len(set(mapping.values())) == len(mapping) == len(model.weights)
    weights = {v.path: np.asarray(v) for v in model.weights}
    for name, array in tensors.items():
        want = array[:, :, ::-1, :] if name == "conv0/W" else array
        np.testing.assert_array_equal(weights[mapping[name]], want, name)
    assert mapping["conv0/bn/variance/EMA"] == "stem_bn/moving_variance"
    assert mapping["group0/block0/convshortcut/W"] == (
        "stage2_block1_shortcut_conv/kernel")
    assert mapping["linear/b"] == "logits/bias"
    expected = {  # the denoise blocks, where present
        "group1_denoise/embedding_phi/W": "stage3_denoise/embedding_phi/kernel",
        "group3_denoise/conv/bn/gamma": "stage5_denoise/bn/gamma",
        "group2/block1/non_local/conv/W": "stage4_block2_denoise/conv/kernel",
        "group2/block1/non_local/conv/bn/mean/EMA":
            "stage4_block2_denoise/bn/moving_mean",
    }
    for name in set(expected) & set(tensors):
        assert mapping[name] == expected[name]


def test_logits_match_tensorpack_reference(converted):
    arch, tensors, model = converted
    rgb = np.random.default_rng(1).integers(0, 256, (2, *SHAPE))
    want = reference_logits(tensors, rgb, arch)
    got = np.asarray(model(rgb.astype(np.float32) / 255.0, training=False))
    assert np.abs(want).max() > 0.1  # not a degenerate network
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("arch", ["resnet_denoise", "resnext_denoise_all"])
def test_denoise_blocks_are_not_identity(arch):
    """The random denoise BN gammas matter: zeroing them changes logits."""
    tensors = make_tensors(arch)
    rgb = np.random.default_rng(2).integers(0, 256, (1, *SHAPE))
    off = {k: (0 * v if k.endswith("conv/bn/gamma") and ("denoise" in k or
                                                         "non_local" in k)
               else v) for k, v in tensors.items()}
    diff = reference_logits(tensors, rgb, arch) - reference_logits(
        off, rgb, arch)
    assert np.abs(diff).max() > 1e-2


# ---- the real checkpoints' names and shapes ----
def _name_list(file, drop_denoise=False):
    shapes = {}
    for line in (DATA / file).read_text().splitlines():
        name, shape = line.split(" ", 1)
        if not (drop_denoise and "_denoise/" in name):
            shapes[name] = tuple(int(d) for d in shape.strip("[]").split(","))
    return shapes


def _stand_ins(shapes):
    """Zero-memory float32 arrays of the given shapes (stride 0)."""
    zero = np.zeros(1, np.float32)
    return {n: np.lib.stride_tricks.as_strided(zero, s, [0] * len(s))
            for n, s in shapes.items()}


@pytest.mark.parametrize("file, drop, count, arch", [
    ("R152-Denoise.txt", True, 777,
     {"name": "resnet152", "blocks": (3, 8, 36, 3), "groups": 1,
      "width_per_group": 64, "denoise": None}),
    ("R152-Denoise.txt", False, 805,
     {"name": "resnet152", "blocks": (3, 8, 36, 3), "groups": 1,
      "width_per_group": 64, "denoise": DENOISE["stage"]}),
    ("X101-DenoiseAll.txt", False, 687,
     {"name": "resnext101_32x8d", "blocks": (3, 4, 23, 3), "groups": 32,
      "width_per_group": 8, "denoise": DENOISE["block"]}),
], ids=["R152", "R152-Denoise", "X101-DenoiseAll"])
def test_real_checkpoint_names(file, drop, count, arch):
    shapes = _name_list(file, drop)
    assert len(shapes) == count
    tensors = _stand_ins(shapes)
    got = ct.infer_architecture(tensors)
    assert got == {**arch, "width": 64, "num_classes": 1000}
    model = ct.build_model(got, input_shape=SHAPE)
    mapping = ct.name_map(model)
    assert set(mapping) == set(shapes)
    model_shapes = {v.path: tuple(v.shape) for v in model.weights}
    assert len(model_shapes) == count
    assert {n: model_shapes[mapping[n]] for n in shapes} == shapes
    assert len(ct._assignments(tensors, model, file, strict=True)) == count


# ---- errors ----
@pytest.fixture(scope="module")
def plain_npz(tmp_path_factory):
    tensors = make_tensors("resnet")
    return _save(tmp_path_factory.mktemp("plain") / "r.npz", tensors), tensors


def test_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        ct.read_npz(path)


def test_truncated_and_garbage_files(tmp_path, plain_npz):
    data = plain_npz[0].read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3, np.float32))
    for path in (cut, junk, single):
        with pytest.raises(ValueError, match=path.name):
            ct.convert(path, input_shape=SHAPE)


def test_object_array_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"conv0/W": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(ValueError, match=r"pickled\.npz.*conv0/W.*pickle"):
        ct.read_npz(path)


def test_colon_zero_suffix_and_duplicates(tmp_path):
    a = np.ones(2, np.float32)
    _save(tmp_path / "ok.npz", {"a:0": a, "b": a})
    assert sorted(ct.read_npz(tmp_path / "ok.npz")) == ["a", "b"]
    _save(tmp_path / "dup.npz", {"a": a, "a:0": a})
    with pytest.raises(ValueError, match=r"dup\.npz.*'a'"):
        ct.read_npz(tmp_path / "dup.npz")


def test_not_a_resnet():
    with pytest.raises(ValueError, match="conv0/W"):
        ct.infer_architecture({"linear/W": np.zeros((4, 2))})
    t = make_tensors("resnet")
    del t["group1/block0/conv2/W"]
    with pytest.raises(ValueError, match="group1/block0/conv2/W"):
        ct.infer_architecture(t)


def _model(arch, denoise=None):
    blocks, width, groups, wpg, _ = ARCHS[arch]
    return ct.build_model(
        {"name": "resnet50", "blocks": blocks, "width": width,
         "groups": groups, "width_per_group": wpg, "num_classes": CLASSES,
         "denoise": denoise}, input_shape=SHAPE)


def test_missing_extra_and_misshaped_tensors(plain_npz):
    _, tensors = plain_npz
    model = _model("resnet")
    before = [np.asarray(v) for v in model.weights]
    missing = {k: v for k, v in tensors.items() if k != "conv0/bn/gamma"}
    with pytest.raises(ValueError, match=r"stem_bn/gamma \(from 'conv0/bn"):
        ct.convert(missing, model)
    extra = {**tensors, "foo/W:0": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="1 tensors used by no.*'foo/W'"):
        ct.convert(extra, model)
    bad = {**tensors, "group1/block0/conv3/W": np.zeros((1, 1, 16, 7))}
    with pytest.raises(ValueError, match=r"group1/block0/conv3/W: file shape "
                       r"\[1, 1, 16, 7\] vs model shape \[1, 1, 16, 64\]"):
        ct.convert(bad, model)
    for v, old in zip(model.weights, before):  # nothing half-assigned
        np.testing.assert_array_equal(np.asarray(v), old)
    ct.convert(extra, model, strict=False)  # only logs the unused tensor
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("logits").bias), tensors["linear/b"])


def test_wrong_architecture(tmp_path):
    path = _save(tmp_path / "denoise.npz", make_tensors("resnet_denoise"))
    with pytest.raises(ValueError, match=r"denoise\.npz.*"
                       r"'group0_denoise/conv/W'"):
        ct.convert(path, _model("resnet_denoise"))  # no denoise layers
    plain = make_tensors("resnet_denoise")
    plain = {k: v for k, v in plain.items() if "_denoise/" not in k}
    with pytest.raises(ValueError, match=r"Keras weights with no tensor.*"
                       r"stage2_denoise/embedding_theta/kernel"):
        ct.convert(plain, _model("resnet_denoise", DENOISE["stage"]))


def test_model_must_map_to_minus_one_one():
    blocks, width, _, _, _ = ARCHS["resnet"]
    from models.resnet import build_resnet

    model = build_resnet(name="resnet50", num_classes=CLASSES, width=width,
                         blocks=blocks, input_shape=SHAPE)  # ImageNet stats
    with pytest.raises(ValueError, match="mean 0.5 and std 0.5"):
        ct.convert(make_tensors("resnet"), model)
