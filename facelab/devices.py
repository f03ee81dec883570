"""Speed switches: a tf.distribute strategy for N devices and a mixed-precision policy."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import keras
import tensorflow as tf

from facelab.machine import cpu_has_bfloat16


def distribution_strategy(devices: int = 1) -> tf.distribute.Strategy:
    """The default strategy for 1 device; MirroredStrategy over the first N GPUs (or, with no
    GPU, N logical CPU devices) otherwise. The batch size is then per replica."""
    if devices <= 1:
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    pool = gpus or tf.config.list_logical_devices("CPU")
    if len(pool) < devices:
        kind = "GPU" if gpus else "CPU"
        raise ValueError(
            f"--devices {devices} asked for, but only {len(pool)} {kind} device(s) are visible; "
            "pass a smaller --devices (on CPU, split_cpu(N) before TensorFlow starts makes N)"
        )
    return tf.distribute.MirroredStrategy([d.name for d in pool[:devices]])


def split_cpu(devices: int) -> None:
    """Expose the CPU as ``devices`` logical devices (call before TensorFlow runs anything)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )


def mixed_policy() -> str:
    """``mixed_float16`` where a GPU is visible; ``mixed_bfloat16`` on CPU, whose float16 is
    emulated (slow) while bfloat16 runs natively on CPUs with AVX512-BF16 or AMX."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def mixed_precision_pays() -> bool:
    """Whether mixed precision is expected to be faster here: on a GPU, or on a CPU that computes
    bfloat16 natively. Elsewhere it is emulated: on a 2-core AVX2 CPU, a training step took twice
    as long as in float32, an epoch of the mask-counting benchmark three times."""
    return bool(tf.config.list_logical_devices("GPU")) or cpu_has_bfloat16()


@contextlib.contextmanager
def precision(mixed: bool) -> Iterator[None]:
    """Build models under ``mixed_policy()`` (float32 outputs stay float32), then restore the policy."""
    previous = keras.config.dtype_policy()
    if mixed:
        if not mixed_precision_pays():
            warnings.warn(
                "mixed precision on a CPU without native bfloat16 (AVX512-BF16, AMX or Arm BF16): "
                "TensorFlow emulates it and training runs two to three times slower than in "
                "float32; drop --mixed-precision (mixed_precision=False) on this machine",
                UserWarning,
                stacklevel=3,
            )
        keras.config.set_dtype_policy(mixed_policy())
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
