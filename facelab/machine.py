"""What a run or benchmark ran on: library versions, device, and the machine in one dict."""

from __future__ import annotations

import os
import platform


def versions() -> dict[str, str]:
    """Library versions recorded in run cards and benchmark lines."""
    import keras
    import numpy as np
    import pandas as pd
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "numpy": np.__version__, "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }  # fmt: skip


def usable_cores() -> int:
    """CPU cores this process may run on (fewer than the machine's under a CPU affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpuinfo(*fields: str) -> str | None:
    """The first value of one of ``fields`` in Linux's /proc/cpuinfo, or None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in fields:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 ``flags``, Arm ``Features``); empty
    elsewhere."""
    return set((_cpuinfo("flags", "Features") or "").split())


def cpu_has_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX, Arm BF16); elsewhere
    TensorFlow emulates it, and mixed precision trains two to three times slower than float32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_name() -> str:
    """The CPU's model name where Linux gives it, else the architecture."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def device() -> str:
    """The device training runs on, in words."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"{len(gpus)} GPU ({gpus[0].name})"
    bfloat16 = "bfloat16" if cpu_has_bfloat16() else "no bfloat16"
    return f"CPU ({cpu_name()}, {os.cpu_count()} cores, {bfloat16})"


def machine_info() -> dict:
    """Machine, device and versions, for the JSON line every benchmark prints."""
    return {
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": device(),
        **versions(),
    }  # fmt: skip
