"""Shared by the benchmark scripts: the model configs they time and side-by-side timing.

The scripts run as `python benchmarks/<name>.py`, which puts this folder on `sys.path`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from te_vqgan.loading import load_model_config


REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "default": REPO_ROOT / "hub_configs" / "te-vqgan-mnist.json",
    "small": REPO_ROOT / "hub_configs" / "te-vqgan-mnist-small.json",
}


def model_config(name: str) -> dict:
    """`TEVQModel` keyword arguments of a named config ('default', 'small') or a .json path."""
    config = load_model_config(CONFIGS.get(name, name))
    config.pop("_class_name", None)
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    named_calls: dict[str, Callable[[], object]], steps: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each function, the calls interleaved round-robin so that
    drift in the machine's speed hits every variant alike."""
    for _ in range(warmup):
        for fn in named_calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in named_calls}
    for _ in range(steps):
        for name, fn in named_calls.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
