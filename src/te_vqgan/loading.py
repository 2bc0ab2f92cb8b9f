"""Load a quantizer from whatever a user points at: a config file, a saved folder, a Hub id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch


logger = logging.getLogger(__name__)

__all__ = ["load_model_config", "load_vq_model", "resolve_device"]


def _model_class(class_name: str | None, source: str):
    """The class a config's `_class_name` names: `TEVQModel` (also for our config files, which
    may leave the name out) or a stock diffusers `VQModel` (the metrics wrap it)."""
    from diffusers import VQModel

    from .models import TEVQModel

    accepted = {"TEVQModel": TEVQModel, "VQModel": VQModel}
    if class_name is None:
        return TEVQModel
    if class_name not in accepted:
        raise ValueError(f"{source} describes a {class_name!r}; expected one of {sorted(accepted)}.")
    return accepted[class_name]


def _checked_class(config: dict, source: str):
    from .models.te_vq_model import check_config_keys

    cls = _model_class(config.get("_class_name"), source)
    check_config_keys(cls, config, source)
    return cls


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a `torch.device` that exists here (default: CUDA when available, else CPU);
    an unknown or unavailable device is a ValueError naming it."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"Unknown device {device!r}; expected e.g. 'cpu', 'cuda' or 'cuda:1'.") from error
    if resolved.type == "cuda":
        available = torch.cuda.device_count()
        if not torch.cuda.is_available() or (resolved.index or 0) >= available:
            raise ValueError(f"Device {device!r} is not available here ({available} CUDA device(s)); use 'cpu'.")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {device!r} is not available here; use 'cpu'.")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Unsupported device {device!r}; expected 'cpu', 'cuda[:N]' or 'mps'.")
    return resolved


def load_model_config(path: str | Path) -> dict:
    """Read a model config JSON (a `hub_configs/*.json` file or a saved `config.json`)."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Model config {str(path)!r} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"Model config {str(path)!r} must hold a JSON object (got {type(config).__name__}).")
    return config


def load_vq_model(
    spec: str,
    seed: int = 0,
    device: str | torch.device | None = None,
    output_loading_info: bool = False,
    **from_pretrained_kwargs,
):
    """A `TEVQModel` (or stock `VQModel`) from a config file, a saved folder or a Hub repo id.

    Args:
        spec (`str`): one of
            - a `.json` model config: a randomly initialised model, seeded with `seed`;
            - a folder written by `save_pretrained`;
            - a Hub repo id (`org/name`), downloaded by `from_pretrained`.
        seed (`int`, *optional*, defaults to `0`): seed of the random initialisation.
        device (`str`, *optional*): where to put the model; default CUDA when available.
        output_loading_info (`bool`, *optional*, defaults to `False`): also return a short text
            saying what was loaded (as transformers' `from_pretrained(..., output_loading_info=True)`).

    Returns:
        The model in eval mode, or `(model, description)` with `output_loading_info=True`.

    Example::

        >>> model = load_vq_model("hub_configs/te-vqgan-cpu.json", seed=0)            # random weights
        >>> model, description = load_vq_model("outputs/stage1", output_loading_info=True)
    """
    device = resolve_device(device)
    path = Path(spec)
    if path.is_file():
        config = load_model_config(path)
        cls = _checked_class(config, f"Model config {str(path)!r}")
        with torch.random.fork_rng(devices=[]):  # seed the initialisation, not the caller's RNG
            torch.manual_seed(seed)
            model = cls.from_config(config)
        description = f"{cls.__name__} randomly initialised from {path} (seed {seed})"
    elif path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is a folder without config.json; expected a save_pretrained folder."
            )
        cls = _checked_class(load_model_config(config_file), f"{str(config_file)!r}")
        model = cls.from_pretrained(path, **from_pretrained_kwargs)
        description = f"{cls.__name__} loaded from {path}"
    elif spec.count("/") == 1 and not spec.endswith((".json", "/")) and not path.exists():
        from huggingface_hub import hf_hub_download

        config_file = hf_hub_download(spec, "config.json", **from_pretrained_kwargs)
        cls = _checked_class(load_model_config(config_file), f"the config.json of the Hub repo {spec!r}")
        model = cls.from_pretrained(spec, **from_pretrained_kwargs)
        description = f"{cls.__name__} loaded from the Hub repo {spec}"
    else:
        raise FileNotFoundError(
            f"Model {spec!r} is neither a config file, a save_pretrained folder nor a Hub repo id (org/name)."
        )
    model.to(device).eval()
    logger.debug("%s", description)
    return (model, description) if output_loading_info else model
