"""The training engine alone, with a toy stage: divergence guards and argument checks."""

from pathlib import Path

import pytest
import torch

from te_vqgan.training.engine import (
    StageParts,
    TrainingDiverged,
    TrainingEngine,
    TrainingStage,
)
from te_vqgan.training.settings import TrainingSettings, parse_settings


class ToyStage(TrainingStage):
    """A linear model on random vectors; `poison` makes the loss or the gradient non-finite
    from step `poison_step` on."""

    name = "toy"

    def __init__(self, poison: str | None = None, poison_step: int = 3):
        self.poison, self.poison_step = poison, poison_step

    def build(self, accelerator):
        model = torch.nn.Linear(4, 1)
        data = [torch.randn(4) for _ in range(32)]
        return StageParts([model], [torch.optim.SGD(model.parameters(), lr=0.1)], data, torch.stack, 0.1)

    def train_step(self, batch, global_step):
        model = self.models[0]
        loss = model(batch).pow(2).mean()
        if global_step + 1 >= self.poison_step:
            if self.poison == "loss":
                loss = loss * float("nan")
            elif self.poison == "gradient":  # finite loss, NaN gradient: d sqrt(|0 * w|) / dw
                loss = loss + (model.weight * 0).abs().sqrt().sum()
        self.updates[0](loss)
        return {"loss": loss.detach()}

    def validate(self, step, output_dir):
        return {"val/loss": 0.5}, None

    def save_final(self, folder, record, run):
        (folder / "weights.txt").write_text("trained")
        (folder / "README.md").write_text("card")


def engine_args(output_dir: Path, *extra: str) -> TrainingSettings:
    return parse_settings(
        TrainingSettings,
        [
            "--output_dir",
            str(output_dir),
            "--seed",
            "0",
            "--train_batch_size",
            "4",
            "--num_train_epochs",
            "1",
            "--learning_rate",
            "0.1",
            "--max_train_steps",
            "5",
            "--checkpointing_steps",
            "2",
            "--report_to",
            "none",
            "--cpu",
            *extra,
        ],
    )


def test_a_clean_run_publishes(tmp_path):
    result = TrainingEngine(engine_args(tmp_path / "run")).fit(ToyStage())
    assert result.global_step == 5
    # checkpoint-5: the last step is checkpointed too, so that a longer run can continue from it.
    assert {"weights.txt", "README.md", "metrics.json", "checkpoint-4", "checkpoint-5"} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }
    longer = TrainingEngine(
        engine_args(tmp_path / "run", "--max_train_steps", "7", "--resume_from_checkpoint", "latest")
    )
    assert longer.fit(ToyStage()).global_step == 7


@pytest.mark.parametrize(
    "poison, what",
    [("loss", "the loss of the Linear update is nan"), ("gradient", "the gradient norm of the Linear update is nan")],
)
def test_a_diverged_run_stops_naming_the_step_and_saves_nothing(tmp_path, poison, what):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=rf"diverged at step 3: {what}.*Nothing was saved.*checkpoint-2"):
        TrainingEngine(engine_args(out)).fit(ToyStage(poison))
    names = {p.name for p in out.iterdir()}
    assert not {"weights.txt", "README.md", "metrics.json"} & names
    assert "checkpoint-2" in names and not any(n.startswith(".final") for n in names)
    # The weights of the last checkpoint are the finite ones before the bad step.
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(out / "checkpoint-2" / "model.safetensors").values())


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--learning_rate", "inf", "expected a finite number (got 'inf')"),
        ("--learning_rate", "nan", "expected a finite number (got 'nan')"),
        ("--max_grad_norm", "-1", "--max_grad_norm must be a finite number > 0"),
        ("--adam_beta2", "1.5", "--adam_beta2 must be in [0, 1)"),
        ("--lr_num_cycles", "0", "--lr_num_cycles must be >= 1"),
    ],
)
def test_engine_flags_are_checked(tmp_path, flag, value, message, capsys):
    with pytest.raises(SystemExit):
        engine_args(tmp_path, flag, value)
    assert message in capsys.readouterr().err
