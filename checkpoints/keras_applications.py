"""Keras Applications ImageNet classifiers under the project's input
contract: RGB float32 `(batch, H, W, 3)` in [0, 1] in, logits out.

Each application expects its own preprocessing (`preprocess_input` of its
module) on 0..255 pixels. `load` puts that preprocessing INSIDE the model as
one frozen 1x1 conv named "preprocess" (a per-channel affine map plus, for
"caffe" mode, the RGB -> BGR swap), so attacks work in [0, 1] pixel space
(Madry et al. 2018, arXiv 1706.06083) and the model saves and loads as a
plain `.keras` file. The head is built without softmax
(`classifier_activation=None`).
"""

from __future__ import annotations

import numpy as np
import keras

# application class -> (keras.applications module, preprocess_input mode).
# "caffe": BGR, minus the ImageNet BGR mean, 0..255 scale; "tf": x/127.5-1;
# "torch": (x/255 - mean) / std; "raw": 0..255, the model normalizes itself.
APPLICATIONS = {
    "ResNet50": ("resnet", "caffe"),
    "ResNet101": ("resnet", "caffe"),
    "ResNet152": ("resnet", "caffe"),
    "ResNet50V2": ("resnet_v2", "tf"),
    "ResNet101V2": ("resnet_v2", "tf"),
    "ResNet152V2": ("resnet_v2", "tf"),
    "VGG16": ("vgg16", "caffe"),
    "VGG19": ("vgg19", "caffe"),
    "InceptionV3": ("inception_v3", "tf"),
    "MobileNetV2": ("mobilenet_v2", "tf"),
    "DenseNet121": ("densenet", "torch"),
    "EfficientNetB0": ("efficientnet", "raw"),
    "ConvNeXtTiny": ("convnext", "raw"),
}
PREFIX = "keras_applications."
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def preprocess_affine(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (1, 1, 3, 3), bias (3,)) of the 1x1 conv that maps RGB in
    [0, 1] to what `preprocess_input(255 * x)` gives in `mode`.

    Raises:
        ValueError: `mode` not one of "caffe", "tf", "torch", "raw".
    """
    w, b = np.zeros((3, 3), np.float32), np.zeros(3, np.float32)
    if mode == "caffe":  # out[c] = 255 * x[2 - c] - mean_bgr[c]
        for c in range(3):
            w[2 - c, c] = 255.0
        b[:] = [-m for m in _CAFFE_MEAN_BGR]
    elif mode == "tf":
        w[:] = 2.0 * np.eye(3)
        b[:] = -1.0
    elif mode == "torch":
        w[:] = np.diag([1.0 / s for s in _TORCH_STD])
        b[:] = [-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD)]
    elif mode == "raw":
        w[:] = 255.0 * np.eye(3)
    else:
        raise ValueError(f"mode must be one of ('caffe', 'tf', 'torch', "
                         f"'raw'); got {mode!r}")
    return w[None, None], b


def parse(spec: str) -> tuple[str, str]:
    """"keras_applications.NAME[:WEIGHTS]" -> (NAME, WEIGHTS), WEIGHTS
    defaulting to "imagenet" (Keras downloads and caches them).

    Raises:
        ValueError: not of that form, or NAME not in `APPLICATIONS`.
    """
    if not spec.startswith(PREFIX):
        raise ValueError(f"expected {PREFIX}NAME[:WEIGHTS_FILE]; got "
                         f"{spec!r}")
    name, _, weights = spec[len(PREFIX):].partition(":")
    if name not in APPLICATIONS:
        raise ValueError(f"unknown Keras application {name!r}; accepted: "
                         f"{sorted(APPLICATIONS)}")
    return name, weights or "imagenet"


def load(spec: str, *, input_shape: tuple[int, int, int] = (224, 224, 3),
         classes: int = 1000) -> keras.Model:
    """Builds a Keras application with weights, under our input contract.

    Args:
        spec: "keras_applications.NAME" (ImageNet weights, downloaded by
            Keras) or "keras_applications.NAME:PATH" (a weights file the
            user has, e.g. `resnet50_weights_tf_dim_ordering_tf_kernels.h5`,
            or "none" for random weights).
        input_shape: `(height, width, 3)`.
        classes: head size; 1000 for the ImageNet weights.

    Returns:
        A Functional model: float32 `(batch, *input_shape)` RGB in [0, 1]
        -> float32 logits `(batch, classes)`; its first layer after the
        input is the frozen 1x1 conv "preprocess", its last the Dense head.

    Raises:
        ValueError: a bad `spec` (lists the accepted names), a weights file
            that does not exist, or `input_shape` without 3 channels.
    """
    import importlib
    import os

    name, weights = parse(spec)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"Keras applications take RGB input (H, W, 3); got "
                         f"input_shape={tuple(input_shape)}")
    if weights == "none":
        weights = None
    elif weights != "imagenet" and not os.path.exists(weights):
        raise ValueError(f"{spec}: no weights file at {weights!r}")
    module_name, mode = APPLICATIONS[name]
    module = importlib.import_module(f"keras.applications.{module_name}")
    kernel, bias = preprocess_affine(mode)
    inputs = keras.Input(tuple(input_shape), name="x")
    pre = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
    x = pre(inputs)
    pre.set_weights([kernel, bias])
    kwargs = {"classifier_activation": None, "classes": classes,
              "input_shape": tuple(input_shape), "include_top": True}
    if name in ("EfficientNetB0", "ConvNeXtTiny"):
        kwargs["include_preprocessing"] = True
    build = getattr(module, name)
    # Keras loads the weights into the application as it builds it (by
    # layer order for .h5 files), so it is built alone; its weights are then
    # copied by layer name into the same architecture built on top of the
    # "preprocess" conv, which keeps the model one flat graph.
    published = build(weights=weights, **kwargs)
    net = build(weights=None, input_tensor=x, **kwargs)
    copied = 0
    for layer in published.layers:
        if layer.weights:
            net.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    expected = sum(1 for layer in net.layers if layer.weights) - 1
    if copied != expected:  # -1: the preprocess conv
        raise ValueError(f"{spec}: copied the weights of {copied} layers "
                         f"but the model has {expected}")
    return keras.Model(inputs, net.output, name=f"{name.lower()}_keras_app")
