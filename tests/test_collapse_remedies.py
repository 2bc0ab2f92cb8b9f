"""The remedies against codebook collapse: each runs, and changes what it claims to change."""

import json

import pytest
import torch
from tiny_configs import TINY_TEVQ
from train_helpers import load_training_script, tiny_train_args, write_tiny_config

from te_vqgan import TEVQModel
from te_vqgan.losses import orthogonal_loss
from te_vqgan.training.codebook import init_codebook_kmeans, kmeans, restart_dead_codes


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets-cache")


def _latents(model, images):
    return (
        model.quantize.prepare_latents(model.encode(images).latents)
        .permute(0, 2, 3, 1)
        .reshape(-1, model.quantize.embedding_dim)
    )


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([centre + 0.1 * torch.randn(50, 2, generator=generator) for centre in centres])
    found = kmeans(points, 3, generator=torch.Generator().manual_seed(1))
    distances = torch.cdist(centres, found)
    assert distances.min(dim=1).values.max() < 0.1  # each true centre has a centroid near it
    spherical = kmeans(points[50:], 2, spherical=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(spherical.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="at least 3 vectors"):
        kmeans(points[:2], 3)


@torch.no_grad()
def test_kmeans_init_puts_the_codes_among_the_latents_and_uses_more_of_them():
    torch.manual_seed(0)
    model = TEVQModel(**TINY_TEVQ).eval()
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    before = model.encode_to_indices(images).unique().numel()
    latents = _latents(model, images)
    init_codebook_kmeans(model, latents, generator=torch.Generator().manual_seed(0))
    after = model.encode_to_indices(images).unique().numel()
    # U(-1/K, 1/K) codes are tiny next to the latents: a few codes win every lookup.
    assert after > before and after >= model.num_codes // 2
    assert model.codebook.norm(dim=1).mean() > 10 * (1 / model.num_codes)


@torch.no_grad()
def test_restarts_revive_dead_codes():
    torch.manual_seed(0)
    model = TEVQModel(**TINY_TEVQ).eval()
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    latents = _latents(model, images)
    init_codebook_kmeans(model, latents, generator=torch.Generator().manual_seed(0))
    used = model.encode_to_indices(images).unique().numel()
    model.codebook[:4] = 1e3  # four codes pushed where no latent goes: dead
    assert model.encode_to_indices(images).unique().numel() <= used - 4
    restarted = restart_dead_codes(model, latents, generator=torch.Generator().manual_seed(0))
    assert restarted >= 4
    # Each restarted code sits on a latent, so it is chosen again.
    revived = model.encode_to_indices(images).unique()
    assert set(range(4)) <= set(revived.tolist())
    assert restart_dead_codes(model, latents, min_count=0) == 0  # nothing is dead under a zero threshold


def test_orthogonal_term_on_active_codes_only_leaves_the_others_alone():
    torch.manual_seed(0)
    model = TEVQModel(**TINY_TEVQ, orthogonal_reg_active_codes_only=True)
    indices = torch.tensor([[[0, 1], [1, 2]]])
    loss = model.compute_orthogonal_loss(indices)
    torch.testing.assert_close(loss, 10.0 * orthogonal_loss(model.codebook[[0, 1, 2]]))
    loss.backward()
    grad = model.codebook.grad
    assert grad[:3].abs().sum() > 0 and grad[3:].abs().sum() == 0
    assert model.compute_orthogonal_loss(torch.zeros(1, 2, 2, dtype=torch.long)) == 0  # one code: no pair
    # Without indices (e.g. a metric) the whole book counts.
    torch.testing.assert_close(model.compute_orthogonal_loss(), 10.0 * orthogonal_loss(model.codebook))


@torch.no_grad()
def test_cosine_lookup_ignores_the_latent_norm_and_decodes_unit_codes():
    torch.manual_seed(0)
    model = TEVQModel(**TINY_TEVQ, codebook_lookup="cosine").eval()
    latents = torch.randn(2, TINY_TEVQ["vq_embed_dim"], 4, 4)
    indices = model.quantize.nearest_indices(latents)
    assert torch.equal(indices, model.quantize.nearest_indices(latents * 7.0))
    torch.testing.assert_close(model.quantize.embed(indices).norm(dim=1), torch.ones(2, 4, 4))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    output = model(images)
    torch.testing.assert_close(output.sample, model.decode_indices(output.indices))


def test_simvq_trains_every_code_through_one_linear_map():
    torch.manual_seed(0)
    model = TEVQModel(**TINY_TEVQ, codebook_parametrization="simvq")
    assert not model.quantize.embedding.weight.requires_grad
    before = model.codebook.detach().clone()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    output = model(images)
    (output.commit_loss + output.orthogonal_loss).backward()
    assert model.quantize.projection.weight.grad.abs().sum() > 0
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    moved = (model.codebook.detach() - before).norm(dim=1) > 0
    assert moved.all()  # the codes the batch did not choose moved too
    with pytest.raises(ValueError, match="simvq"):
        init_codebook_kmeans(model, torch.randn(64, TINY_TEVQ["vq_embed_dim"]))


def test_new_config_keys_round_trip_and_bad_values(tmp_path):
    model = TEVQModel(
        **TINY_TEVQ, codebook_lookup="cosine", codebook_parametrization="simvq", orthogonal_reg_active_codes_only=True
    )
    model.save_pretrained(tmp_path)
    loaded = TEVQModel.from_pretrained(tmp_path)
    assert loaded.config.codebook_lookup == "cosine" and loaded.quantize.projection is not None
    torch.testing.assert_close(loaded.codebook, model.codebook)
    with pytest.raises(ValueError, match="'manhattan'"):
        TEVQModel(**TINY_TEVQ, codebook_lookup="manhattan")
    with pytest.raises(ValueError, match="'ema'"):
        TEVQModel(**TINY_TEVQ, codebook_parametrization="ema")


@pytest.mark.slow
def test_training_script_runs_the_remedies_and_records_them(tmp_path, mnist_dir, dataset_cache):
    train = load_training_script()
    config = write_tiny_config(tmp_path)
    output = tmp_path / "run"
    args = train.parse_args(
        tiny_train_args(
            config,
            output,
            mnist_dir,
            dataset_cache,
            "--kmeans_init_step",
            "2",
            "--dead_code_restart_steps",
            "4",
        )
    )
    train.main(args)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["kmeans_init_step"] == 2 and metrics["dead_code_restart_steps"] == 4
    assert metrics["reconstruction_loss"] == "l2"  # no perceptual term: the colour-keeping default
    for key in (
        "colour_fidelity",
        "shape_iou",
        "shift_equivariance_foreground",
        "shift_equivariance_red",
        "shift_equivariance_all_colours",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    card = (output / "README.md").read_text()
    assert "k-means centroids" in card and "restarted every 4 steps" in card and "colour_fidelity" in card
    # k-means at step 2 moved the codes off U(-1/K, 1/K).
    model = TEVQModel.from_pretrained(output)
    assert model.codebook.abs().max() > 1 / model.num_codes


def test_remedies_refuse_a_simvq_codebook_and_bad_steps(tmp_path, mnist_dir, dataset_cache, capsys):
    train = load_training_script()
    config = write_tiny_config(tmp_path, codebook_parametrization="simvq")
    args = train.parse_args(
        tiny_train_args(config, tmp_path / "run", mnist_dir, dataset_cache, "--kmeans_init_step", "1")
    )
    with pytest.raises(ValueError, match="'simvq'"):
        train.main(args)
    with pytest.raises(SystemExit):
        train.parse_args(
            tiny_train_args(config, tmp_path / "run", mnist_dir, dataset_cache, "--dead_code_restart_steps", "-1")
        )
    assert "--dead_code_restart_steps must be >= 0 (got -1)" in capsys.readouterr().err


def test_ablation_rows_table_and_plan(tmp_path):
    ablation = load_training_script("collapse_ablation")
    args = ablation.parse_args(["--rows", "te_kmeans,sc", "--seeds", "0,1", "--output_dir", str(tmp_path)])
    plan = ablation.AblationPlan(args)  # the runs are a plan on reproduce's runner, with its CPU recipe
    assert [step.key for step in plan.steps] == ["te_kmeans-seed0", "te_kmeans-seed1", "sc-seed0", "sc-seed1"]
    settings = plan.steps[1].settings
    assert settings.kmeans_init_step == 300 and settings.seed == 1
    assert (settings.learning_rate, settings.scale_lr, settings.reconstruction_loss) == (3e-4, False, "l2")
    assert plan.steps[1].command[-2:] == ["--config", str(tmp_path.resolve() / "runs" / "te_kmeans-seed1.json")]
    records = {"te_kmeans": [{"seed": s, **{key: 0.5 + s for key, _, _ in ablation.COLUMNS}} for s in (0, 1)]}
    summary = ablation.summarise(records)
    assert summary["te_kmeans"]["codes_used"] == (1.0, 0.5)
    table = ablation.render_table(summary, records)
    assert "| `te_kmeans` | 2 | 1.000 (0.500) |" in table and "k-means init" in table
    with pytest.raises(SystemExit):
        ablation.parse_args(["--rows", "nope", "--output_dir", str(tmp_path)])


def test_ablation_on_any_image_dataset(tmp_path):
    ablation = load_training_script("collapse_ablation")
    args = ablation.parse_args(
        ["--rows", "te_shift", "--seeds", "0", "--output_dir", str(tmp_path), "--dataset", "fashion_mnist"]
        + ["--resolution", "32", "--validation_split", "test", "--num_train", "300"]
    )
    settings = ablation.AblationPlan(args).steps[0].settings
    assert (settings.dataset, settings.resolution, settings.validation_split) == ("fashion_mnist", 32, "test")
    assert settings.max_train_samples == 300 and settings.shift_equivariance_weight == 1.0
    # a row without the TextMNIST columns: "-" in the table, the any-image score in the scatter
    records = {
        "te_shift": [{"seed": 0, "image_shift_equivariance": 0.9, "codes_used": 40.0, "perplexity": 4.0}],
        "sc": [{"seed": 0, "image_shift_equivariance": 0.8, "codes_used": 20.0}],
    }
    table = ablation.render_table(ablation.summarise(records), records)
    assert table.startswith("| row | seeds | equiv. any-image (whole-token shifts) | codes used | perplexity |")
    assert "| `te_shift` | 1 | 0.900 (0.000) | 40.0 (0.0) | 4.0 (0.0) |" in table
    assert "| `sc` | 1 | 0.800 (0.000) | 20.0 (0.0) | - |" in table
    assert ablation.save_scatter(records, tmp_path / "scatter.png").is_file()


def test_stage1_budget_study_rows_are_the_smoke_presets_stage1_changed(tmp_path, capsys):
    from te_vqgan.reproduce import PRESETS, ReproducePlan

    study = load_training_script("stage1_budget_study")
    smoke = PRESETS["smoke"]
    for row, (_, changes) in study.ROWS.items():
        preset = study.preset_for(changes, "sc")
        step = next(s for s in ReproducePlan(preset, tmp_path / row).steps if s.kind == "stage1")
        settings = step.settings
        assert step.key == "stage1/sc-seed0" and settings.seed == 0
        # what the row does not change is the smoke preset's
        assert settings.max_train_steps == changes.get("stage1_steps", smoke.stage1_steps)
        assert settings.train_batch_size == changes.get("stage1_batch", smoke.stage1_batch)
        for name, value in {**smoke.stage1_settings, **changes.get("stage1_settings", {})}.items():
            assert getattr(settings, name) == value, (row, name)
    assert study.preset_for(study.ROWS["crop32"][1], "te").stage1_settings["train_crop_size"] == 32
    results = {
        "crop32/te": {"row": "crop32", "description": "d", "quantizer": "te", "seconds": 213, "recon_l1": 0.0796}
        | {"codes_test_seen": 29, "ceiling_test_seen": 0.112, "ceiling_test": 0.098},
        "preset/te": {"seconds": 615},  # measured time only: not a row of the table yet
    }
    study.write_table(tmp_path, results)
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[2:] == ["| `crop32`: d | te | 213 | 0.0796 | 29 | 0.112 | 0.098 |"]
    for argv, message in (
        (["--rows", "nope"], "--rows ['nope'] are not rows"),
        (["--classifier", str(tmp_path)], "is not a `te-vqgan train-classifier` folder"),
    ):
        with pytest.raises(SystemExit):
            study.main(["--classifier", str(tmp_path / "none"), "--output_dir", str(tmp_path), *argv])
        assert message in capsys.readouterr().err
