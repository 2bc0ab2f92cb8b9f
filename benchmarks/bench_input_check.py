"""The cost of checking images for NaN/Inf in every training step, side by side.

    python benchmarks/bench_input_check.py                 # CPU or the GPU when present
    python benchmarks/bench_input_check.py --config default

`TEVQModel.forward(..., check_finite=True)` reads `isfinite(images).all()` back from the
device, a host sync per step on a GPU; the training step passes `check_finite=False` (its
images are decoded from uint8 files, and a non-finite loss is caught by the engine). This
times the stage-1 step (forward, L2, VQ and orthogonal terms, backward, Adam) both ways,
interleaved.
"""

from __future__ import annotations

import argparse

import torch
from common import interleaved_medians, model_config

from te_vqgan import TEVQModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="'small', 'default' or a .json path")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = TEVQModel(**model_config(args.config)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(args.batch_size, 3, 64, 64, device=device) * 2 - 1

    def step(check_finite: bool):
        output = model(images, check_finite=check_finite)
        loss = (output.sample - images).pow(2).mean() + output.commit_loss + output.orthogonal_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = interleaved_medians(
        {"checked": lambda: step(True), "unchecked": lambda: step(False)}, args.steps, 3, device
    )
    print(
        f"device {device}, config {args.config}, batch {args.batch_size}, median of {args.steps} interleaved steps",
        flush=True,
    )
    print(
        f"step with the input check {times['checked'] * 1e3:.2f} ms, without {times['unchecked'] * 1e3:.2f} ms: "
        f"ratio {times['checked'] / times['unchecked']:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
