"""Typed settings: flags and `--config run.json` are one object, checked once, never changed."""

import dataclasses
import json

import pytest

from te_vqgan.training.settings import (
    SETTINGS_FILE,
    GeneratorTrainingSettings,
    TrainingSettings,
    VQGANTrainingSettings,
    parse_settings,
)


STAGE2 = ["--tokenized_dataset", "tokens", "--vqmodel", "quantizer", "--output_dir", "run"]
STAGE1 = ["--model_config", "config.json", "--output_dir", "run"]


@pytest.mark.parametrize(
    "cls, argv",
    [
        (
            GeneratorTrainingSettings,
            STAGE2
            + [
                "--dropout",
                "0",
                "--lr_num_cycles",
                "1",
                "--text_length",
                "45",
                "--directions",
                "t2i",
                "--position_scheme",
                "modality",
                "--max_grad_norm",
                "0.5",
                "--cpu",
                "--seed",
                "7",
            ],
        ),
        (
            VQGANTrainingSettings,
            STAGE1
            + [
                "--no-scale_lr",
                "--perceptual_weight",
                "0",
                "--kmeans_init_step",
                "300",
                "--center_crop",
                "--dataset",
                "textmnist:fashion_mnist",
                "--learning_rate",
                "3e-4",
            ],
        ),
        (
            TrainingSettings,
            ["--output_dir", "run", "--max_train_steps", "5", "--lr_scheduler", "cosine", "--mixed_precision", "bf16"],
        ),
    ],
)
def test_flags_and_config_file_round_trip(tmp_path, cls, argv):
    settings = parse_settings(cls, argv, check_inputs=False)
    path = settings.to_json(tmp_path / "run.json")
    assert parse_settings(cls, ["--config", str(path)], check_inputs=False) == settings
    assert parse_settings(cls, settings.to_flags(), check_inputs=False) == settings
    assert cls.from_dict(json.loads(path.read_text())) == settings
    # Flags after the file override it, and only what they name.
    changed = parse_settings(
        cls, ["--config", str(path), "--resume_from_checkpoint", "latest", "--seed", "3"], check_inputs=False
    )
    assert changed == settings.replace(resume_from_checkpoint="latest", seed=3)


def test_derived_values_are_settled_once():
    stage1 = parse_settings(
        VQGANTrainingSettings,
        STAGE1 + ["--perceptual_weight", "0", "--dataset", "textmnist:fashion_mnist"],
        check_inputs=False,
    )
    assert stage1.reconstruction_loss == "l2" and stage1.dataset_config == "fashion_mnist" and stage1.scale_lr is True
    assert parse_settings(VQGANTrainingSettings, STAGE1, check_inputs=False).reconstruction_loss == "l1"
    stage2 = parse_settings(GeneratorTrainingSettings, STAGE2 + ["--directions", "t2i,i2t"], check_inputs=False)
    assert stage2.direction_list == ["i2t", "t2i"]  # the authors' order within a batch
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage2.seed = 1
    # The stages' own defaults: the authors' seeds and batches.
    assert (stage1.seed, stage1.train_batch_size, stage2.seed, stage2.train_batch_size) == (23, 96, 42, 100)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dropout", "1.5"], "--dropout must be in [0, 1) (got 1.5)"),
        (["--n_head", "3"], "--n_embd must be divisible by --n_head (got 256 and 3)"),
        (["--learning_rate", "nan"], "--learning_rate: expected a finite number (got 'nan')"),
        (["--directions", "t2x"], "--directions must name t2i and/or i2t (got 't2x')"),
        (["--lr_scheduler", "cosine_forever"], "invalid choice: 'cosine_forever'"),
    ],
)
def test_bad_values_are_one_line_errors(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(GeneratorTrainingSettings, STAGE2 + extra, check_inputs=False)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bad_config_files(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"output_dir": "run", "tokenized_dataset": "t", "vqmodel": "q", "dropuot": 0}))
    with pytest.raises(SystemExit):
        parse_settings(GeneratorTrainingSettings, ["--config", str(path)], check_inputs=False)
    assert "'dropuot' (did you mean 'dropout'?)" in capsys.readouterr().err
    path.write_text(json.dumps({"output_dir": "run"}))
    with pytest.raises(SystemExit):
        parse_settings(GeneratorTrainingSettings, ["--config", str(path)], check_inputs=False)
    assert "lacks the required settings tokenized_dataset, vqmodel" in capsys.readouterr().err
    path.write_text("{not json")
    with pytest.raises(SystemExit):
        parse_settings(GeneratorTrainingSettings, ["--config", str(path)], check_inputs=False)
    assert "is not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_settings(GeneratorTrainingSettings, ["--config", str(tmp_path / "missing.json")], check_inputs=False)
    assert "missing.json' is not a file" in capsys.readouterr().err


def test_inputs_are_checked_when_the_run_starts(tmp_path, capsys):
    settings = GeneratorTrainingSettings(
        tokenized_dataset=str(tmp_path / "none"), vqmodel="q", output_dir=str(tmp_path / "run")
    )
    with pytest.raises(ValueError, match="is not a folder"):
        settings.check_inputs()
    with pytest.raises(SystemExit):
        parse_settings(GeneratorTrainingSettings, settings.to_flags())
    assert "--tokenized_dataset" in capsys.readouterr().err


def test_the_token_is_never_written_and_a_run_saves_its_settings(tmp_path):
    from test_training_engine import ToyStage, engine_args

    from te_vqgan.training.engine import TrainingEngine

    settings = engine_args(tmp_path / "run").replace(hub_token="hf_secret")
    assert "hf_secret" not in settings.to_json(tmp_path / "s.json").read_text()
    TrainingEngine(settings).fit(ToyStage())
    saved = tmp_path / "run" / SETTINGS_FILE
    assert parse_settings(TrainingSettings, ["--config", str(saved)]) == settings.replace(hub_token=None)
    assert SETTINGS_FILE in json.loads((tmp_path / "run" / ".complete.json").read_text())["files"]


def test_the_conversion_weight_is_only_for_a_stock_model(capsys):
    assert (
        parse_settings(
            VQGANTrainingSettings,
            ["--pretrained_model_name_or_path", "org/vq", "--output_dir", "run", "--orthogonal_reg_weight", "0"],
            check_inputs=False,
        ).orthogonal_reg_weight
        == 0
    )
    with pytest.raises(SystemExit):
        parse_settings(VQGANTrainingSettings, STAGE1 + ["--orthogonal_reg_weight", "1"], check_inputs=False)
    assert "with --model_config set it in the config" in capsys.readouterr().err
