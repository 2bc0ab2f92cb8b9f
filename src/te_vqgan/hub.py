"""Pushing folders to the Hugging Face Hub: one helper for models and datasets alike."""

from __future__ import annotations

import os


__all__ = ["PUSH_IGNORE_PATTERNS", "push_folder_to_hub"]

# What a push of a training output folder leaves out: training state, tracker logs, per-step
# validation figures. Patterns match paths inside the folder (fnmatch: `*` also matches `/`).
PUSH_IGNORE_PATTERNS = ("checkpoint-*", "*.tmp", "*.tmp/*", "logs/*", "validation/*")


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: str = "model",
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    ignore_patterns: tuple[str, ...] | None = PUSH_IGNORE_PATTERNS,
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
    )
    return str(getattr(info, "commit_url", info))
