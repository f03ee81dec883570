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


def device() -> str:
    """The device training runs on, in words."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"{len(gpus)} GPU ({gpus[0].name})"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def machine_info() -> dict:
    """Machine, device and versions, for the JSON line every benchmark prints."""
    return {
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "device": device(),
        **versions(),
    }  # fmt: skip
