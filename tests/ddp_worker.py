"""Run by `accelerate launch` in the training tests: train, then write this rank's weight digest.

The script is `training/train_vqgan.py` unless `TE_VQGAN_TEST_SCRIPT` names another
(`train_generator`).
"""

import os
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_helpers import load_training_script, state_digest  # noqa: E402


if __name__ == "__main__":
    script = load_training_script(os.environ.get("TE_VQGAN_TEST_SCRIPT", "train_vqgan"))
    args = script.parse_args(sys.argv[1:])
    result = script.main(args)
    rank = os.environ.get("RANK", "0")
    (Path(args.output_dir) / f"weights-rank{rank}.sha256").write_text(
        f"{state_digest(result.model.state_dict())} {result.global_step}\n"
    )
