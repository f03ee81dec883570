"""Transfer learning on keras.applications backbones, with BatchNormalization frozen correctly.

A transfer model takes raw 0-255 RGB images::

    image -> BackbonePreprocessing (the backbone's own preprocess_input, as a saved layer)
          -> "backbone" (keras.applications, include_top=False) -> head (see heads.py)

With pretrained weights (``"imagenet"`` or a local file) the backbone is an
:class:`InferenceBackbone`: it runs in inference mode whatever ``training`` its caller passes,
so BatchNormalization normalises with its stored moving statistics (and backbone dropout is
off) in both training phases. Phase 1 trains the head with the whole base frozen;
:func:`prepare_fine_tuning` (phase 2) unfreezes the top layers of the base but keeps every
BatchNormalization layer frozen.

Why a class and not ``backbone(x, training=False)``: in Keras 3 a functional model re-injects
its own ``training`` flag into every nested layer at call time, overriding a ``training=False``
written when the graph was built — under ``fit`` the nested backbone would run in training mode.

With ``weights=None`` there are no statistics to keep: the backbone is a plain model trained
from scratch (all layers trainable, BatchNormalization learning as usual, with momentum 0.9 so
that its moving statistics settle within a short run, and ResNet50's residual blocks starting
as identities, see :class:`BackboneSpec`) unless ``freeze_base=True`` asks for the
frozen set-up anyway (tests, benchmarks).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
from keras import ops

from facelab.models.heads import HeadConfig, add_head, head_from_experiment
from facelab.models.registry import register_model
from facelab.models.scratch import BN_MOMENTUM

if TYPE_CHECKING:
    from facelab.config import Experiment

BACKBONE_NAME = "backbone"
PREPROCESSING_MODES = ("tf", "caffe", "torch", "none")
# keras.applications.imagenet_utils: "caffe" is BGR minus these means, "torch" is (x/255-mean)/std.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """A keras.applications constructor, its preprocess_input mode and its smallest input side.

    ``residual_bn``: a regular expression naming the BatchNormalization layer that ends each
    residual branch; trained from scratch, those start with gamma 0 so that every residual block
    starts as the identity ("zero-gamma", Goyal et al. 2017).
    """

    application: Callable[..., keras.Model]
    preprocessing: str
    min_size: int
    residual_bn: str | None = None


BACKBONES: dict[str, BackboneSpec] = {
    "inceptionv3": BackboneSpec(keras.applications.InceptionV3, "tf", 75),
    # From scratch on the synthetic faces (64 px, Adam 1e-3) ResNet50 stayed at chance for
    # 10 epochs as built by Keras; with zero-gamma it reached 0.90 validation accuracy in 2.
    "resnet50": BackboneSpec(
        keras.applications.ResNet50, "caffe", 32, residual_bn=r"conv\d_block\d+_3_bn"
    ),
    "mobilenetv2": BackboneSpec(keras.applications.MobileNetV2, "tf", 32),
    "inceptionresnetv2": BackboneSpec(keras.applications.InceptionResNetV2, "tf", 75),
    # EfficientNet rescales and normalises inside the application itself.
    "efficientnetb0": BackboneSpec(keras.applications.EfficientNetB0, "none", 32),
}


try:  # InceptionResNetV2's scaling layer is not registered with Keras; .h5 files find it by name.
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    keras.saving.get_custom_objects().setdefault("CustomScaleLayer", CustomScaleLayer)
except ImportError:  # a Keras without it: .keras files still load
    pass


class WeightsUnavailableError(ValueError):
    """ImageNet weights were asked for but could not be downloaded. A ValueError: the fix is
    another ``weights`` value, so the command line prints it as one line, not a traceback."""


@keras.saving.register_keras_serializable(package="facelab")
class BackbonePreprocessing(keras.layers.Layer):
    """keras.applications' ``preprocess_input`` as a saved layer: raw 0-255 RGB in.

    ``mode`` "tf": x / 127.5 - 1; "caffe": RGB -> BGR minus the ImageNet means; "torch":
    (x / 255 - mean) / std; "none": unchanged (the backbone preprocesses itself).
    """

    def __init__(self, mode: str = "tf", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"preprocessing mode {mode!r} unknown; choose one of {PREPROCESSING_MODES}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_BGR_MEAN, x.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, x.dtype)
            return (x / 255.0 - mean) / ops.convert_to_tensor(_TORCH_STD, x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="facelab")
class InferenceBackbone(keras.Model):
    """A functional backbone that always runs in inference mode, whatever ``training`` it is
    called with: BatchNormalization uses its moving statistics, dropout is off."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def resolve_weights(weights: str | os.PathLike | None) -> str | None:
    """``None``, ``"imagenet"`` or an existing local weights file; a clear error otherwise."""
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: weights file not found; pass weights='imagenet', None (--weights none), or "
            "the path of a keras.applications weights file saved with include_top=False"
        )
    return str(path)


def build_backbone(
    name: str, input_size: int, weights: str | os.PathLike | None = None, inference: bool = True
) -> keras.Model:
    """The keras.applications backbone ``name`` (include_top=False) as a model named
    "backbone": an :class:`InferenceBackbone` when ``inference``, else a plain functional model."""
    spec = backbone_spec(name)
    if input_size < spec.min_size:
        raise ValueError(
            f"{name} needs images of at least {spec.min_size} px, got image_size={input_size}; "
            f"pass --image-size {spec.min_size} or more"
        )
    weights = resolve_weights(weights)
    try:
        with warnings.catch_warnings():
            # MobileNetV2 warns that ImageNet weights exist only for 96-224 px and loads the
            # 224 px ones, which work at any size (the convolutions do not depend on it).
            warnings.filterwarnings("ignore", message=".*input_shape.*")
            application = spec.application(
                include_top=False, weights=weights, input_shape=(input_size, input_size, 3)
            )
    except Exception as err:
        if weights == "imagenet" and _is_download_failure(err):
            raise WeightsUnavailableError(_download_advice(name, err)) from None
        if weights not in (None, "imagenet"):
            raise ValueError(
                f"{weights}: cannot be loaded as {name} weights ({type(err).__name__}: "
                f"{str(err)[:300]}); pass a keras.applications {name} weights file saved with "
                "include_top=False (a '_notop' file), 'imagenet' or None"
            ) from None
        raise
    model_class = InferenceBackbone if inference else keras.Model
    return model_class(application.input, application.output, name=BACKBONE_NAME)


def build_transfer(
    backbone: str,
    input_size: int = 224,
    num_classes: int = 3,
    weights: str | os.PathLike | None = None,
    head: HeadConfig | None = None,
    multilabel: bool = False,
    freeze_base: bool | None = None,
) -> keras.Model:
    """image (raw 0-255) -> preprocessing -> backbone -> head, uncompiled.

    ``freeze_base`` (default: True with pretrained weights, False with ``weights=None``) builds
    phase 1: the base frozen and in inference mode. Unfrozen pretrained weights train every
    layer but BatchNormalization, still in inference mode; unfrozen ``weights=None`` trains
    everything from scratch.
    """
    spec = backbone_spec(backbone)
    pretrained = resolve_weights(weights) is not None
    if freeze_base is None:
        freeze_base = pretrained
    inference = pretrained or freeze_base
    base = build_backbone(backbone, input_size, weights, inference=inference)
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = BackbonePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    x = base(x, training=False) if inference else base(x)
    outputs = add_head(x, num_classes, head, multilabel)
    if freeze_base:
        base.trainable = False
    elif inference:
        _unfreeze_top(base, -1)
    else:
        # From scratch the moving statistics must catch up within a short run; MobileNetV2's
        # 0.999 would still remember the initial ones after hundreds of steps (see scratch.py).
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = min(layer.momentum, BN_MOMENTUM)
                if spec.residual_bn and re.fullmatch(spec.residual_bn, layer.name):
                    layer.gamma.assign(ops.zeros_like(layer.gamma))
    return keras.Model(inputs, outputs, name=backbone)


def backbone_spec(name: str) -> BackboneSpec:
    """The :data:`BACKBONES` entry for ``name``; a clear error naming the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"backbone {name!r} unknown; choose one of {sorted(BACKBONES)}") from None


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested "backbone" model of a transfer model."""
    try:
        return model.get_layer(BACKBONE_NAME)
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no {BACKBONE_NAME!r} layer: fine-tuning applies to transfer "
            f"models ({', '.join(sorted(BACKBONES))}); for {model.name!r} set fine_tune_epochs=0"
        ) from None


def prepare_fine_tuning(model: keras.Model, layers: int) -> None:
    """Phase 2: unfreeze the top ``layers`` layers of the backbone (-1: all of them), keeping
    every BatchNormalization layer frozen (in Keras 3 a frozen BN layer runs in inference mode).

    The model must be compiled again afterwards for the change to take effect.
    """
    if layers < -1:
        raise ValueError(f"fine_tune_layers must be -1 (all) or >= 0, got {layers}")
    if layers == 0:
        warnings.warn(
            "fine_tune_layers=0: phase 2 trains the head only; pass -1 (all) or a layer count",
            stacklevel=2,
        )
    _unfreeze_top(get_backbone(model), layers)


def _unfreeze_top(backbone: keras.Model, layers: int) -> None:
    """Make the top ``layers`` layers (-1: all) trainable, except BatchNormalization."""
    candidates = [
        layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    top = len(candidates) if layers == -1 else min(layers, len(candidates))
    backbone.trainable = True
    first = len(candidates) - top
    for i, layer in enumerate(candidates):
        layer.trainable = i >= first and not isinstance(layer, keras.layers.BatchNormalization)


def _is_download_failure(err: Exception) -> bool:
    import urllib.error

    return isinstance(err, urllib.error.URLError | ConnectionError | TimeoutError) or (
        "URL fetch failure" in str(err)  # how keras.utils.get_file reports a failed download
    )


def _download_advice(name: str, err: Exception) -> str:
    found = re.search(r"(https?://\S+?)(?::\s|\s|$)", str(err))
    url = found.group(1) if found else "the keras-applications release page"
    file = url.rsplit("/", 1)[-1] if found else f"the {name} '_notop' weights file"
    return (
        f"ImageNet weights for {name} could not be downloaded from {url} "
        f"({type(err).__name__}: {str(err)[:200]}). Without network, train from scratch with "
        f"weights=None (--weights none), or download {file} on a machine with network and pass "
        f"its local path: weights='/path/to/{file}' (--weights /path/to/{file}); Keras also "
        "finds it without a path when copied into ~/.keras/models/."
    )


def _register(name: str) -> None:
    @register_model(name)
    def build(exp: Experiment, num_classes: int, multilabel: bool = False) -> keras.Model:
        # exp.extra: "head" (reference | gender), "units", "dropouts", "l2", "pooling" (heads.py)
        # and "freeze_base" (default: frozen with pretrained weights, trained with weights None).
        return build_transfer(
            name,
            input_size=exp.image_size,
            num_classes=num_classes,
            weights=exp.weights,
            head=head_from_experiment(exp),
            multilabel=multilabel,
            freeze_base=exp.extra.get("freeze_base"),
        )


for _name in BACKBONES:
    _register(_name)
