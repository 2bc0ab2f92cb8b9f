"""Shared pieces of the training tests: importing the scripts, a tiny config file, Accelerate's
state reset, weight digests."""

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import torch
from tiny_configs import TINY_MODEL_CONFIG


REPO_ROOT = Path(__file__).resolve().parents[1]


def reset_accelerate_state() -> None:
    """Forget Accelerate's process-wide state (its singletons keep the first Accelerator's
    device, mixed precision and accumulation for every later one): tests/conftest.py does it
    after every test, and a test or script that builds two Accelerators in a row in between."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def load_training_script(name: str = "train_vqgan"):
    """Import `training/<name>.py` as a module (the scripts are not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_config(folder: Path, **overrides) -> Path:
    path = folder / "tiny_model.json"
    path.write_text(json.dumps({**TINY_MODEL_CONFIG, **overrides}))
    return path


def tiny_train_args(config: Path, output_dir: Path, mnist_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    """A run of a few seconds: 64 train images, batch 8, GAN from step 3, no LPIPS."""
    return [
        "--model_config",
        str(config),
        "--output_dir",
        str(output_dir),
        "--mnist_dir",
        str(mnist_dir),
        "--cache_dir",
        str(cache_dir),
        "--num_train",
        "64",
        "--num_validation",
        "16",
        "--num_shift_groups",
        "4",
        "--train_batch_size",
        "8",
        "--max_train_steps",
        "6",
        "--perceptual_weight",
        "0",
        "--disc_start",
        "3",
        "--disc_ndf",
        "8",
        "--checkpointing_steps",
        "2",
        "--validation_steps",
        "3",
        "--num_validation_images",
        "16",
        "--report_to",
        "none",
        "--cpu",
        *extra,
    ]


def state_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
