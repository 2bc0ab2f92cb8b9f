"""Pushing folders to the Hugging Face Hub: one helper for models and datasets alike."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


__all__ = ["PUSH_IGNORE_PATTERNS", "TeVqganCardMixin", "eval_results", "hub_repo_id", "push_folder_to_hub"]

# What a push of a training output folder leaves out: training state, tracker logs, per-step
# validation figures. Patterns match paths inside the folder (fnmatch: `*` also matches `/`).
PUSH_IGNORE_PATTERNS = ("checkpoint-*", "*.tmp", "*.tmp/*", "logs/*", "validation/*", ".lock", ".complete.json")


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: str = "model",
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    ignore_patterns: tuple[str, ...] | None = PUSH_IGNORE_PATTERNS,
    create_pr: bool = False,
) -> str:
    """Create `repo_id` if needed and upload `folder`, leaving out `ignore_patterns`.

    Returns the commit URL. Users then load a model with `TEVQModel.from_pretrained(repo_id)`
    and a dataset with `datasets.load_dataset(repo_id)`.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type=repo_type,
        commit_message=commit_message or f"Upload {os.path.basename(os.path.abspath(folder))} with te-vqgan",
        ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
        create_pr=create_pr,
    )
    return str(getattr(info, "commit_url", info))


def hub_repo_id(value) -> str | None:
    """`value` when it names a Hub repo (`org/name`, not a local path), else None: a card's
    `datasets` and `base_model` hold only Hub ids (a local folder would make the metadata invalid)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str) or value.count("/") != 1 or os.path.exists(value):
        return None
    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    return value


def eval_results(
    metrics: dict,
    names: dict[str, str],
    task_type: str,
    dataset_name: str,
    dataset_type: str,
    dataset_split: str | None = None,
) -> list:
    """`huggingface_hub.EvalResult`s (the card's `model-index`) for the `metrics` a run measured:
    `names` maps a metrics key to the metric's name in the card; keys the run lacks, or whose value is
    not a finite number, are left out."""
    import math

    from huggingface_hub import EvalResult

    results = []
    for key, name in names.items():
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        results.append(
            EvalResult(
                task_type=task_type,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                metric_type=key,
                metric_name=name,
                metric_value=float(value),
            )
        )
    return results


class TeVqganCardMixin:
    """te-vqgan's model card, written by `save_pretrained` and kept by `push_to_hub` from Python.

    diffusers' `push_to_hub` writes its generic card ("[More Information Needed]") over whatever
    `save_pretrained` wrote. With this mixin, `save_pretrained(folder)` writes `README.md`: the card
    of the folder the object was loaded from when it had one (a trained run's card, with its
    metrics), else `default_model_card()`; a card already in `folder` is left as it is (training
    scripts write theirs after saving). `push_to_hub(repo_id)` saves to a temporary folder and
    uploads it, card included.
    """

    _card_source: str | None = None

    def default_model_card(self):  # pragma: no cover - each class defines its card
        raise NotImplementedError

    def _remember_card(self, folder) -> None:
        card = Path(str(folder)) / "README.md"
        if card.is_file():
            self._card_source = str(card.resolve())

    def _write_card(self, save_directory) -> None:
        target = Path(save_directory) / "README.md"
        source = self._card_source
        if source and Path(source).is_file() and Path(source) != target.resolve():
            shutil.copyfile(source, target)
        elif not target.exists():
            self.default_model_card().save(target)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
    ) -> str:
        """Save to a temporary folder (weights, configs and te-vqgan's card) and upload it to `repo_id`."""
        with tempfile.TemporaryDirectory() as folder:
            options = {"safe_serialization": safe_serialization, **({"variant": variant} if variant else {})}
            self.save_pretrained(folder, **options)
            return push_folder_to_hub(
                folder, repo_id, token=token, private=private, commit_message=commit_message, create_pr=create_pr
            )
