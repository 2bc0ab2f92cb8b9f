"""Run by `accelerate launch` in test_train_vqgan.py: train, then write this rank's weight digest."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_helpers import load_training_script, state_digest  # noqa: E402


if __name__ == "__main__":
    train_vqgan = load_training_script()
    args = train_vqgan.parse_args(sys.argv[1:])
    result = train_vqgan.main(args)
    rank = os.environ.get("RANK", "0")
    (Path(args.output_dir) / f"weights-rank{rank}.sha256").write_text(
        f"{state_digest(result.model.state_dict())} {result.global_step}\n"
    )
