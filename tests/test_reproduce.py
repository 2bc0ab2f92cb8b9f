"""`te-vqgan reproduce`: the plan, resumption (finished stages are skipped) and the report."""

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import pytest

from te_vqgan.reproduce import (
    PRESETS,
    ReproducePlan,
    StageFailed,
    preset_with,
    render_report,
    summarise_results,
    what_to_see,
)


def finish(step):
    """What a stage leaves when it ends: its marker (an evaluation names its classifier), and a
    training run's completion marker over its files."""
    from te_vqgan.files import write_completion_marker

    step.folder.mkdir(parents=True, exist_ok=True)
    content = {"classifier": step.call.keywords["classifier"]} if step.kind == "evaluate" else {}
    (step.folder / step.marker).write_text(json.dumps(content))
    if step.resumable:
        (step.folder / "README.md").write_text("card")
        write_completion_marker(step.folder, [step.marker, "README.md"])


def test_the_data_stage_builds_in_one_process(tmp_path):
    # `datasets` would fork its workers from the long-lived `reproduce` process, where a fork taken
    # while pyarrow's jemalloc thread holds a lock hangs the worker for good (measured on the smoke preset).
    data = ReproducePlan(PRESETS["smoke"], tmp_path, mnist_dir="mnist").steps[0]
    assert data.key == "data" and data.call.keywords["num_proc"] == 1


def test_the_plan_has_every_stage_in_order(tmp_path):
    preset = replace(PRESETS["cpu"], quantizers=("te", "sc"), seeds=(0, 1), train_sizes=(100, 50), num_train=100)
    plan = ReproducePlan(preset, tmp_path, mnist_dir="mnist")
    keys = [step.key for step in plan.steps]
    assert keys[:2] == ["data", "classifier"]
    # per quantizer and seed: stage 1, tokens, then stage 2 and evaluation per train size
    assert keys[2:8] == [
        "stage1/te-seed0",
        "tokenize/te-seed0",
        "stage2/te-seed0-n100",
        "evaluate/te-seed0-n100",
        "stage2/te-seed0-n50",
        "evaluate/te-seed0-n50",
    ]
    assert len(keys) == 2 + 2 * 2 * (2 + 2 * 2)
    stage1 = plan.steps[2]
    assert stage1.command[1].endswith("training/train_vqgan.py") and stage1.settings.model_config.endswith(
        "te-vqgan-mnist-cpu-f8.json"
    )
    # A training stage runs `SCRIPT --config OUTPUT/runs/<stage>.json`, the file holding its typed settings.
    assert stage1.command[2:] == ["--config", str(tmp_path.resolve() / "runs" / "stage1" / "te-seed0.json")]
    stage2 = plan.steps[4]
    assert stage2.settings.train_subset_size == 100
    smaller = plan.steps[6]  # the same epochs for the smaller train size: half the steps
    assert smaller.settings.max_train_steps == round(preset.stage2_steps / 2)
    assert stage2.settings.scaled_down  # the cpu preset labels its cards
    assert stage2.settings.text_length == 45  # 43-token captions + <bot>, <eot>
    assert stage2.settings.caption_form == "canonical"  # the CPU presets' recipe; the paper preset's is the authors'
    assert PRESETS["paper"].stage2_settings.get("caption_form", "as_written") == "as_written"
    stage2.write_settings()
    from te_vqgan.training.settings import parse_settings

    assert parse_settings(type(stage2.settings), stage2.command[2:], check_inputs=False) == stage2.settings
    # The other stages call the library: data, classifier, tokens and evaluation are functions with named arguments.
    classifier = plan.steps[1].call
    assert classifier.func.__name__ == "train_and_save"
    # One judge for the CPU presets: the cpu preset trains the smoke preset's classifier (the same call but the folders).
    smoke_classifier = ReproducePlan(PRESETS["smoke"], tmp_path / "smoke").steps[1].call
    places = ("output", "cache_dir", "mnist_dir")
    assert {k: v for k, v in classifier.keywords.items() if k not in places} == {
        k: v for k, v in smoke_classifier.keywords.items() if k not in places
    }
    assert plan.display(plan.steps[1]).startswith("te_vqgan.commands.train_classifier.train_and_save(output=")


def test_rerunning_skips_finished_stages_and_continues_the_rest(tmp_path, monkeypatch):
    preset = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,))
    plan = ReproducePlan(preset, tmp_path)
    ran = []

    def fake_run(step):  # each stage "writes" its marker
        ran.append(step.key)
        finish(step)
        if step.key == "tokenize/te-seed0" and len(ran) == 4:
            raise StageFailed("interrupted")

    monkeypatch.setattr(plan, "_run_step", fake_run)
    with pytest.raises(StageFailed):
        plan.run(log=lambda line: None)
    assert ran == ["data", "classifier", "stage1/te-seed0", "tokenize/te-seed0"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert set(state["seconds"]) == {"data", "classifier", "stage1/te-seed0"}  # the interrupted stage has no time
    ran.clear()
    lines = []
    plan.run(log=lines.append)
    # The marker of the interrupted stage was written before it failed: done now; the rest run.
    assert ran == ["stage2/te-seed0-n100", "evaluate/te-seed0-n100"]
    assert lines[0].startswith("[1/6] data: done") and "about" in lines[4]
    ran.clear()
    plan.run(log=lambda line: None)
    assert ran == []  # everything done: a third run trains nothing


def test_a_failing_training_stage_is_one_clear_error(tmp_path):
    preset = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,))
    plan = ReproducePlan(preset, tmp_path)
    step = plan.steps[2]
    step.command = [step.command[0], "-c", "import sys; sys.exit(3)"]
    with pytest.raises(StageFailed, match="stage1/te-seed0 failed .* exited with 3"):
        plan._run_step(step)


def test_preset_overrides_are_checked():
    assert preset_with("cpu", quantizers=["te"], seeds=[4]).seeds == (4,)
    assert preset_with("smoke", train_sizes=[5000]).num_train == 5000
    with pytest.raises(ValueError, match="'xx'"):
        preset_with("cpu", quantizers=["xx"])
    with pytest.raises(ValueError, match="'huge'"):
        preset_with("huge")


def _run(q, seed, size, t2i, i2t, codes):
    buckets = lambda a: {"accuracy": a, "Quad1": a, "Quad2": a, "Quad3": a, "Quad4": a, "Centre": a, "clauses": {}}  # noqa: E731
    split = {
        "t2i": buckets(t2i),
        "i2t": buckets(i2t),
        "sanity": {
            "t2i_ground_truth": 1.0,
            "i2t_ground_truth": 1.0,
            "t2i_reconstructions": 0.9,
            "passed": True,
            "t2i_prompt_ignored": 0.02,
            "i2t_image_ignored": 0.04,
        },
    }
    stage1 = {
        "codes_used": codes,
        "perplexity": 5.0,
        "recon_l1": 0.03,
        "recon_l2": 0.02,
        "colour_fidelity": 0.99,
        "shape_iou": 0.7,
        "shift_equivariance": 0.9,
        "shift_equivariance_foreground": 0.98,
        "shift_equivariance_all_colours": 0.9,
        "shift_equivariance_foreground_all_colours": 0.97,
        **{f"shift_equivariance_foreground_{c}": 0.97 for c in ("white", "red", "green", "blue")},
    }
    return {
        "quantizer": q,
        "seed": seed,
        "train_size": size,
        "stage1": stage1,
        "evaluation": {"test": split, "test_seen": split},
    }


def test_report_renders_tables_from_a_results_file():
    preset = replace(PRESETS["smoke"], train_sizes=(100, 50))
    from dataclasses import asdict

    results = {
        "preset": asdict(preset),
        "runs": [
            _run("te", 0, 100, 0.5, 0.3, 80),
            _run("te", 1, 100, 0.7, 0.5, 90),
            _run("sc", 0, 100, 0.2, 0.1, 100),
            _run("te", 0, 50, 0.4, 0.2, 80),
            _run("sc", 0, 50, 0.1, 0.1, 100),
        ],
        "classifier": {
            "accuracy": {"test": {"colour_accuracy": 1.0, "digit_accuracy": 0.996, "windows": 7500}},
            "meets_target": True,
        },
        "seconds": {"data": 10.0, "stage1/te-seed0": 100.0, "stage1/sc-seed0": 120.0},
        "commands": {"data": "te-vqgan build-dataset ..."},
        "versions": {"torch": "2.13.0"},
    }
    summary = summarise_results(results)
    assert summary["table1"]["te"]["t2i_Quad1"] == pytest.approx((0.6, 0.1))  # mean (std) over the two seeds
    assert summary["table2"]["te"][50] == pytest.approx((0.4, 0.0))
    assert summary["table3"]["te"]["codes_used"] == pytest.approx((85.0, 5.0))
    report = render_report(json.loads(json.dumps(results)), {"equivariance against codes used": "figures/x.png"})
    assert "not comparable to the paper's" in report
    assert "| TE (SC + orth.) | 2 | 0.600 (0.100) |" in report
    assert "| TE (SC + orth.), paper | 3 | 0.931 | 0.913 | 0.890 | 0.868 | 0.825 |" in report
    assert "not measured (LPIPS not installed)" in report and "![](figures/x.png)" in report
    assert "| **all stage1** | 220 |" in report and "| **total** | 230 |" in report
    assert "test colour 1.0000, digit 0.9960 (7,500 windows) (met)" in report
    # one sentence on what the figures show, from how far the best generator is above chance on test_seen
    assert (
        "What to look at: in the text-to-image samples most digits have the colour and the place their prompt names"
        in report
    )
    assert "TE (SC + orth.): text-to-image 0.60 and image-to-text 0.40 on `test_seen`" in report
    weak = {**summary, "seen": {q: {"t2i_accuracy": (0.05, 0.0), "i2t_accuracy": (0.3, 0.0)} for q in ("te", "sc")}}
    assert "does not yet follow its prompt" in what_to_see(weak, ("te", "sc"))
    # the chance rows: the generator's all-bucket accuracy beside another example's ground truth
    assert summary["chance"]["te"]["t2i_prompt_ignored_test"] == pytest.approx((0.02, 0.0))
    assert (
        "| TE (SC + orth.) | 0.600 (0.100) | 0.020 (0.000) | 0.400 (0.100) | 0.040 (0.000) | 0.600 (0.100) |" in report
    )
    assert "text-to-image on `test` (chance 0.020): TE (SC + orth.) 0.600 is above it, SC 0.200 is above it" in report
    # a results file from before the chance rows renders without them
    for run in results["runs"]:
        for split in run["evaluation"].values():
            split["sanity"] = {k: v for k, v in split["sanity"].items() if not k.endswith("ignored")}
    assert "Chance level" not in render_report(json.loads(json.dumps(results)))


def test_a_given_classifier_replaces_the_classifier_stage(tmp_path):
    from te_vqgan.classifier import DigitColourClassifier

    DigitColourClassifier(channels=(4, 8, 8)).save_pretrained(tmp_path / "clf")
    preset = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,))
    plan = ReproducePlan(preset, tmp_path / "run", classifier=str(tmp_path / "clf"))
    assert [s.key for s in plan.steps][:2] == ["data", "stage1/te-seed0"]
    evaluate = plan.steps[-1]
    assert evaluate.call.keywords["classifier"] == str(tmp_path / "clf")
    with pytest.raises(ValueError, match="not a `te-vqgan train-classifier` folder"):
        ReproducePlan(preset, tmp_path / "run", classifier=str(tmp_path))


def test_the_report_says_whether_te_beats_sc_beyond_the_seed_spread():
    from te_vqgan.reproduce import te_gain_verdict

    row = lambda mean, std: {"t2i_accuracy": (mean, std), "seeds": 2}  # noqa: E731
    assert "outside the seed spread" in te_gain_verdict({"table1": {"te": row(0.5, 0.01), "sc": row(0.3, 0.01)}})
    assert "**not** outside" in te_gain_verdict({"table1": {"te": row(0.32, 0.02), "sc": row(0.3, 0.02)}})
    one = {"table1": {"te": {"t2i_accuracy": (0.5, 0.0), "seeds": 1}, "sc": {"t2i_accuracy": (0.3, 0.0), "seeds": 1}}}
    assert "one seed" in te_gain_verdict(one)


def test_an_output_folder_is_continued_only_with_the_same_settings(tmp_path, monkeypatch):
    preset = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,))
    plan = ReproducePlan(preset, tmp_path)
    monkeypatch.setattr(plan, "_run_step", lambda step: finish(step))
    plan.run(log=lambda line: None)
    other = ReproducePlan(replace(preset, num_train=preset.num_train + 1), tmp_path)  # the data every run reads
    with pytest.raises(ValueError, match=f"num_train: {preset.num_train} -> {preset.num_train + 1}"):
        other.run(log=lambda line: None)


def test_a_classifier_settings_change_retrains_the_classifier_and_reevaluates_only(tmp_path, monkeypatch):
    preset = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,))
    plan = ReproducePlan(preset, tmp_path)
    ran = []

    def fake_run(step):
        ran.append(step.key)
        finish(step)

    monkeypatch.setattr(plan, "_run_step", fake_run)
    plan.run(log=lambda line: None)
    ran.clear()
    retrained = ReproducePlan(replace(preset, classifier_epochs=preset.classifier_epochs + 4), tmp_path)

    def interrupted(step):  # the rerun stops after the classifier, before the evaluation
        if step.kind == "evaluate":
            raise StageFailed("interrupted")
        fake_run(step)

    monkeypatch.setattr(retrained, "_run_step", interrupted)
    lines = []
    with pytest.raises(StageFailed):
        retrained.run(log=lines.append)
    assert ran == ["classifier"]  # stage 1 and 2 and the tokens are kept
    assert "classifier_epochs" in lines[0] and "evaluate/te-seed0-n100" in lines[0]
    # The estimate of what is left counts the stages to rerun.
    state = {"seconds": {"classifier": 100.0, "evaluate/te-seed0-n100": 30.0}}
    assert retrained.estimate_left(state, 0, {"classifier", "evaluate/te-seed0-n100"}) == 130.0
    assert retrained.estimate_left(state, 0) == 0.0
    # The evaluation's old marker is still there; the state remembers it is stale, so continuing reruns it.
    monkeypatch.setattr(retrained, "_run_step", fake_run)
    retrained.run(log=lines.append)
    assert ran == ["classifier", "evaluate/te-seed0-n100"]
    ran.clear()
    retrained.run(log=lambda line: None)
    assert ran == []
    assert (
        json.loads((tmp_path / "state.json").read_text())["settings"]["classifier_epochs"]
        == preset.classifier_epochs + 4
    )
    with pytest.raises(ValueError, match=r"stage1_steps: 800 -> 900.*only classifier_train"):
        ReproducePlan(replace(preset, classifier_epochs=1, stage1_steps=900), tmp_path).run(log=lambda line: None)


def test_a_stage2_recipe_change_trains_the_generators_afresh_on_the_same_tokens(tmp_path, monkeypatch):
    preset = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100, 50))
    plan = ReproducePlan(preset, tmp_path)
    ran = []

    def fake_run(step):
        ran.append(step.key)
        finish(step)

    def stopped_in_the_second_generator(step):  # the first run ends inside stage2/te-seed0-n50
        if step.key == "stage2/te-seed0-n50":
            (step.folder / "checkpoint-10").mkdir(parents=True)
            raise StageFailed("interrupted")
        fake_run(step)

    monkeypatch.setattr(plan, "_run_step", stopped_in_the_second_generator)
    with pytest.raises(StageFailed):
        plan.run(log=lambda line: None)
    ran.clear()
    changed = ReproducePlan(replace(preset, stage2_batch=4, stage2_steps=preset.stage2_steps * 2), tmp_path)
    monkeypatch.setattr(changed, "_run_step", fake_run)
    lines = []
    changed.run(log=lines.append)
    # Stage 1, the tokens and the classifier are kept; both generators train again, from nothing: the finished one
    # and the interrupted one (whose checkpoint holds the old batch) are moved aside, not resumed.
    assert ran == ["stage2/te-seed0-n100", "evaluate/te-seed0-n100", "stage2/te-seed0-n50", "evaluate/te-seed0-n50"]
    assert "stage2_batch" in lines[0] and "stage2_steps" in lines[0]
    moved = sorted(p.relative_to(tmp_path).parts[2:] for p in (tmp_path / "replaced").glob("*/stage2/*"))
    assert moved == [("stage2", "te-seed0-n100"), ("stage2", "te-seed0-n50")]
    assert not any((tmp_path / "stage2" / "te-seed0-n50").glob("checkpoint-*"))
    ran.clear()
    changed.run(log=lambda line: None)
    assert ran == [] and len(list((tmp_path / "replaced").iterdir())) == 1


def record_call(folder, overwrite=False, fail=False):
    """A library stage for the tests: writes its marker (and how it was called) into `folder`."""
    import os

    if fail:
        raise ValueError("bad input, named")
    Path(folder).mkdir(parents=True, exist_ok=True)
    print(f"ran in {os.getpid()}")
    (Path(folder) / "done").write_text(json.dumps({"overwrite": overwrite, "pid": os.getpid()}))


def test_library_stages_replace_what_an_interrupted_run_left(tmp_path):
    import functools

    from te_vqgan.reproduce import Step

    plan = ReproducePlan(replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,)), tmp_path)
    # The stages that write a folder whole take overwrite=True for leftovers; the evaluation rewrites its own files.
    assert [s.kind for s in plan.steps if s.replaces_folder] == ["data", "classifier", "tokenize"]
    step = Step(
        "lib",
        "data",
        tmp_path / "lib",
        "done",
        call=functools.partial(record_call, str(tmp_path / "lib")),
        replaces_folder=True,
    )
    step.run_call()
    assert json.loads((tmp_path / "lib" / "done").read_text())["overwrite"] is False  # nothing was there
    step.run_call()
    assert json.loads((tmp_path / "lib" / "done").read_text())["overwrite"] is True
    failing = Step(
        "bad", "data", tmp_path / "bad", "done", call=functools.partial(record_call, str(tmp_path / "bad"), fail=True)
    )
    with pytest.raises(StageFailed, match="Stage bad failed: bad input, named"):
        plan._run_step(failing)


@pytest.mark.slow
def test_jobs_run_library_stages_in_worker_processes_with_their_logs(tmp_path):
    import functools
    import os

    from te_vqgan.reproduce import Step

    plan = fake_plan(tmp_path, [("train", (), 0, 0, False)])
    plan.steps += [
        Step(
            "lib",
            "evaluate",
            tmp_path / "lib",
            "done",
            call=functools.partial(record_call, str(tmp_path / "lib")),
            needs=("train",),
        ),
        Step(
            "bad",
            "evaluate",
            tmp_path / "bad",
            "done",
            call=functools.partial(record_call, str(tmp_path / "bad"), fail=True),
        ),
    ]
    with pytest.raises(StageFailed, match=r"1 stage\(s\) failed: bad \(exited with 1"):
        plan.run(log=lambda line: None, jobs=2)
    assert json.loads((tmp_path / "lib" / "done").read_text())["pid"] != os.getpid()
    assert "ran in" in (tmp_path / "logs" / "lib.log").read_text()
    assert "ValueError: bad input, named" in (tmp_path / "logs" / "bad.log").read_text()


# ---------------------------------------------------------------------------- --jobs: stages side by side
FAKE_STAGE = r"""
import json, os, sys, time
from pathlib import Path
folder, seconds, code = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
folder.mkdir(parents=True, exist_ok=True)
(folder / "pid").write_text(str(os.getpid()))
(folder / "gpu").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "-"))
(folder / "threads").write_text(os.environ.get("OMP_NUM_THREADS", "-"))
start = time.time()
if "--resume_from_checkpoint" not in sys.argv:
    (folder / "checkpoint-1").mkdir(exist_ok=True)
    time.sleep(seconds)
if code:
    sys.exit(code)
(folder / "times.json").write_text(json.dumps([start, time.time()]))
(folder / "done").write_text("")
if "--resume_from_checkpoint" in sys.argv or "resumable" in sys.argv:  # a training run: its completion marker last
    (folder / "README.md").write_text("card")
    (folder / ".complete.json").write_text(json.dumps({"files": {"done": 0, "README.md": 4}}))
"""


def fake_plan(tmp_path, specs):
    """A plan of subprocess stages: specs = [(key, needs, seconds, exit code, resumable)]."""
    import sys

    from te_vqgan.reproduce import Step

    plan = ReproducePlan(replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,)), tmp_path)
    plan.steps = [
        Step(
            key,
            "stage2",
            tmp_path / key,
            "done",
            [
                sys.executable,
                "-c",
                FAKE_STAGE,
                str(tmp_path / key),
                str(seconds),
                str(code),
                *(["resumable"] if resumable else []),
            ],
            resumable=resumable,
            needs=needs,
        )
        for key, needs, seconds, code, resumable in specs
    ]
    return plan


def times(tmp_path, key):
    return json.loads((tmp_path / key / "times.json").read_text())


@pytest.mark.parametrize("user_threads", [None, "3"])
def test_jobs_share_the_cpu_cores_out(tmp_path, monkeypatch, user_threads):
    # Each stage's torch would take every core; side by side they would wait on one another.
    from te_vqgan.reproduce import cpu_threads_per_job

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert [cpu_threads_per_job(jobs) for jobs in (1, 2, 3, 8)] == [4, 2, 1, 1]
    if user_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user_threads)  # the caller's choice is kept
    plan = fake_plan(tmp_path, [("a", (), 0, 0, False), ("b", (), 0, 0, False)])
    plan.run(log=lambda line: None, jobs=2)
    for key in ("a", "b"):
        assert (tmp_path / key / "threads").read_text() == (user_threads or "2")


def test_jobs_run_independent_stages_together_and_dependent_ones_after(tmp_path):
    plan = fake_plan(tmp_path, [("a", (), 1.5, 0, False), ("b", (), 1.5, 0, False), ("c", ("a",), 0, 0, False)])
    state = plan.run(log=lambda line: None, jobs=2)
    (a_start, a_end), (b_start, b_end), (c_start, _) = (times(tmp_path, k) for k in "abc")
    assert b_start < a_end and a_start < b_end  # side by side
    assert c_start >= a_end  # after what it needs
    assert set(state["seconds"]) == {"a", "b", "c"} and set(state["timeline"]) == {"a", "b", "c"}
    assert (tmp_path / "logs" / "a.log").is_file()
    ran = []
    plan.run(log=ran.append, jobs=2)
    assert not any("started" in line for line in ran)  # a rerun has nothing left to do


def test_jobs_report_a_failing_stage_while_the_others_finish(tmp_path):
    plan = fake_plan(
        tmp_path, [("bad", (), 0.2, 3, False), ("after_bad", ("bad",), 0, 0, False), ("good", (), 1.0, 0, False)]
    )
    with pytest.raises(
        StageFailed,
        match=r"1 stage\(s\) failed: bad \(exited with 3; log: .*bad.log\); "
        r"not run because a stage they need failed: after_bad",
    ):
        plan.run(log=lambda line: None, jobs=2)
    assert (tmp_path / "good" / "done").is_file() and not (tmp_path / "after_bad").exists()
    state = json.loads((tmp_path / "state.json").read_text())
    assert set(state["seconds"]) == {"good"}


def test_a_job_killed_mid_stage_is_resumed_by_the_rerun(tmp_path):
    import os
    import signal
    import threading
    import time

    plan = fake_plan(tmp_path, [("train", (), 60, 0, True), ("evaluate", ("train",), 0, 0, False)])
    errors = []
    runner = threading.Thread(
        target=lambda: errors.append(pytest.raises(StageFailed, plan.run, log=lambda line: None, jobs=2))
    )
    runner.start()
    pid_file = tmp_path / "train" / "pid"
    deadline = time.time() + 30
    while not pid_file.is_file() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the trainer dies mid-stage, after its first checkpoint
    runner.join(timeout=30)
    assert errors and "train (exited with -9" in str(errors[0].value) and not (tmp_path / "train" / "done").exists()
    state = plan.run(
        log=lambda line: None, jobs=2
    )  # the same command again: the training continues from its checkpoint
    assert (tmp_path / "train" / "done").is_file() and (tmp_path / "evaluate" / "done").is_file()
    assert state["seconds"]["train"] < 30  # resumed (the fake skips its sleep), not started over
    assert plan.subprocess_command(plan.steps[0])[-2:] == ["--resume_from_checkpoint", "latest"]


def test_every_stage_of_a_preset_needs_only_earlier_stages(tmp_path):
    plan = ReproducePlan(replace(PRESETS["cpu"], seeds=(0, 1)), tmp_path, mnist_dir="mnist")
    seen = set()
    for step in plan.steps:
        assert set(step.needs) <= seen, step.key
        seen.add(step.key)
    evaluate = next(step for step in plan.steps if step.kind == "evaluate")
    assert set(evaluate.needs) == {"stage2/te-seed0-n20000", "classifier"}
    with pytest.raises(ValueError, match="`jobs` must be an integer >= 1 \\(got 0\\)"):
        plan.run(jobs=0)
    with pytest.raises(ValueError, match="`gpus` must be distinct CUDA device ids >= 0 \\(got \\[0, 0\\]\\)"):
        plan.run(jobs=2, gpus=[0, 0])
    with pytest.raises(ValueError, match="give `jobs` > 1 too"):
        plan.run(jobs=1, gpus=[0, 1])


def test_jobs_spread_over_the_given_gpus(tmp_path):
    plan = fake_plan(tmp_path, [("a", (), 1.0, 0, False), ("b", (), 1.0, 0, False)])
    plan.run(log=lambda line: None, jobs=2, gpus=[3, 5])
    assert sorted((tmp_path / key / "gpu").read_text() for key in "ab") == ["3", "5"]


def test_the_gpu_preset_runs_six_jobs_in_bf16(tmp_path):
    preset = PRESETS["gpu"]
    plan = ReproducePlan(preset, tmp_path, mnist_dir="mnist")
    assert preset.jobs == 6 and preset.seeds == (0, 1, 2)
    stage2 = next(step for step in plan.steps if step.kind == "stage2")
    assert stage2.settings.mixed_precision == "bf16" and stage2.settings.n_layer == 8
    # jobs is how a run is scheduled, not what it computes: a folder continues with another --jobs
    small = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,))
    first = ReproducePlan(small, tmp_path / "run")
    first.steps = []
    first.run(log=lambda line: None)
    again = ReproducePlan(replace(small, jobs=4), tmp_path / "run")
    again.steps = []
    again.run(log=lambda line: None)  # no "holds a run with other settings"


def test_a_train_size_trains_as_long_whichever_sizes_are_asked_for(tmp_path):
    # `--train-sizes 6667` alone (a folder finishing the smaller size) once trained 6,800 steps
    # instead of the 2,267 it gets beside 20,000: the steps follow the data built, not the selection.
    def stage2_steps(preset, folder):
        plan = ReproducePlan(preset, tmp_path / folder, mnist_dir="mnist")
        return {s.key: s.settings.max_train_steps for s in plan.steps if s.kind == "stage2"}

    whole = stage2_steps(PRESETS["cpu"], "whole")
    assert whole["stage2/te-seed0-n6667"] == round(PRESETS["cpu"].stage2_steps * 6667 / 20000) == 2267
    assert stage2_steps(preset_with("cpu", train_sizes=[6667]), "small")["stage2/te-seed0-n6667"] == 2267
    assert stage2_steps(preset_with("cpu", train_sizes=[20000]), "large")["stage2/te-seed0-n20000"] == 6800


def test_a_folder_takes_more_seeds_quantizers_and_train_sizes(tmp_path):
    small = replace(PRESETS["smoke"], quantizers=("te",), seeds=(0,), train_sizes=(100,))
    first = ReproducePlan(small, tmp_path / "run")
    first.steps = []
    first.run(log=lambda line: None)
    more = ReproducePlan(
        replace(small, quantizers=("te", "sc"), seeds=(0, 1), train_sizes=(100, 50)), tmp_path / "run"
    )
    assert {"stage2/sc-seed1-n50", "stage1/sc-seed1"} <= {step.key for step in more.steps}
    more.steps = []
    assert not more.run(log=lambda line: None).get("stale")  # added runs, nothing rerun


def _finished_folder(folder, runs, fingerprint="judge-a", sampling=None, settings=None):
    """A `reproduce` folder as a results folder keeps it: each run's stage-1 metrics and evaluation."""
    from te_vqgan.reproduce import CPU_EVAL

    for r in runs:
        stage1 = folder / "stage1" / f"{r['quantizer']}-seed{r['seed']}"
        stage1.mkdir(parents=True, exist_ok=True)
        (stage1 / "metrics.json").write_text(json.dumps(r["stage1"]))
        evaluation = folder / "evaluation" / f"{r['quantizer']}-seed{r['seed']}-n{r['train_size']}"
        evaluation.mkdir(parents=True, exist_ok=True)
        recorded = {"classifier_fingerprint": fingerprint, "sampling": sampling or CPU_EVAL, "splits": r["evaluation"]}
        (evaluation / "evaluation.json").write_text(json.dumps(recorded))
    state = {"seconds": {f"stage2/{r['quantizer']}-seed{r['seed']}-n{r['train_size']}": 10.0 for r in runs}}
    if settings is not None:
        state["settings"] = settings
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def test_a_report_merges_runs_made_in_several_folders(tmp_path):
    from te_vqgan.cli import main
    from te_vqgan.reproduce import NOT_SETTINGS, merge_results

    te = _finished_folder(
        tmp_path / "node-te", [_run("te", 0, 20000, 0.5, 0.3, 80), _run("te", 1, 20000, 0.7, 0.5, 90)]
    )
    sc = _finished_folder(
        tmp_path / "node-sc", [_run("sc", 0, 20000, 0.2, 0.1, 100), _run("sc", 1, 20000, 0.4, 0.3, 100)]
    )
    # The figures come from the first seed whose files a folder keeps (here TE's seed 1 only).
    png = b"\x89PNG seed 1 samples"
    (te / "evaluation" / "te-seed1-n20000" / "test-samples.png").write_bytes(png)
    assert main(["report", "--preset", "cpu", "--output-dir", str(tmp_path / "report"), str(te), str(sc)]) == 0
    assert (tmp_path / "report" / "figures" / "t2i-samples-te.png").read_bytes() == png
    assert "TE (SC + orth.) (seed 1): text-to-image samples" in (tmp_path / "report" / "report.md").read_text()
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["preset"]["quantizers"] == ["te", "sc"] and results["preset"]["seeds"] == [0, 1]
    assert results["preset"]["train_sizes"] == [20000]
    assert results["sources"]["evaluation/sc-seed1-n20000"] == str(sc)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| TE (SC + orth.) | 2 | 0.600 (0.100) |" in report and "| SC | 2 | 0.300 (0.100) |" in report
    assert (
        "TE against SC, text-to-image over all buckets: +0.300; the seed spread (std TE + std SC) is 0.200" in report
    )
    assert "Merged by `te-vqgan report`" in report and "| stage2/sc-seed1-n20000 | 10 |" in report

    # Parts that must match are checked before anything is written.
    with pytest.raises(ValueError, match="is in both"):
        merge_results("cpu", [te, _finished_folder(tmp_path / "again", [_run("te", 1, 20000, 0.7, 0.5, 90)])])
    other_judge = _finished_folder(tmp_path / "judge-b", [_run("sc", 2, 20000, 0.2, 0.1, 100)], fingerprint="judge-b")
    with pytest.raises(ValueError, match="different classifiers"):
        merge_results("cpu", [te, other_judge])
    one_sample = _finished_folder(
        tmp_path / "one-sample", [_run("sc", 3, 20000, 0.2, 0.1, 100)], sampling={"num_candidates": 1}
    )
    with pytest.raises(ValueError, match=r"num_candidates 1 \(the cpu preset: 8\)"):
        merge_results("cpu", [te, one_sample])
    settings = {
        k: v for k, v in json.loads(json.dumps(dataclasses.asdict(PRESETS["cpu"]))).items() if k not in NOT_SETTINGS
    }
    batch32 = _finished_folder(
        tmp_path / "batch32", [_run("sc", 4, 20000, 0.2, 0.1, 100)], settings={**settings, "stage2_batch": 32}
    )
    with pytest.raises(ValueError, match="stage2_batch: 32 there, 8 in the preset"):
        merge_results("cpu", [te, batch32])
    same = _finished_folder(
        tmp_path / "same", [_run("sc", 5, 20000, 0.2, 0.1, 100)], settings={**settings, "seeds": [5]}
    )
    assert merge_results("cpu", [te, same])[2].seeds == (0, 1, 5)
    with pytest.raises(ValueError, match="holds no finished stage 1"):
        merge_results("cpu", [te, tmp_path])
    assert not (tmp_path / "again" / "report.md").exists()


def test_a_report_whose_figure_fails_leaves_the_earlier_report_whole(tmp_path):
    # A folder holding a quantizer's weights gets its index-map figure, which reads MNIST: offline
    # with no MNIST folder that fails, and the earlier results.json and report.md must stay a pair.
    from tiny_configs import TINY_TEVQ

    from te_vqgan.models import TEVQModel
    from te_vqgan.reproduce import report_from_folders

    te = _finished_folder(tmp_path / "node-te", [_run("te", 0, 20000, 0.5, 0.3, 80)])
    report_from_folders("cpu", [te], tmp_path / "report", log=lambda line: None)
    before = {name: (tmp_path / "report" / name).read_text() for name in ("results.json", "report.md")}
    metrics = (te / "stage1" / "te-seed0" / "metrics.json").read_text()
    TEVQModel(**TINY_TEVQ).save_pretrained(te / "stage1" / "te-seed0")  # weights and config beside the metrics
    (te / "stage1" / "te-seed0" / "metrics.json").write_text(metrics)
    (te / "evaluation" / "te-seed0-n20000" / "evaluation.json").write_text(
        (te / "evaluation" / "te-seed0-n20000" / "evaluation.json").read_text().replace("0.5", "0.6")
    )
    (tmp_path / "no-mnist").mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz|t10k-images-idx3-ubyte.gz"):
        report_from_folders(
            "cpu", [te], tmp_path / "report", mnist_dir=str(tmp_path / "no-mnist"), log=lambda line: None
        )
    assert {name: (tmp_path / "report" / name).read_text() for name in before} == before


def test_jobs_start_the_stage_the_rest_of_the_run_waits_on_first(tmp_path):
    # x and y end chains of one stage; z has w waiting on it: z takes the second slot, y waits.
    specs = [("x", (), 0.6, 0, False), ("y", (), 0.6, 0, False), ("z", (), 0.6, 0, False), ("w", ("z",), 0, 0, False)]
    plan = fake_plan(tmp_path, specs)
    assert [s.key for s in plan.critical_path_first(plan.steps, {"seconds": {}})] == ["z", "x", "y", "w"]
    plan.run(log=lambda line: None, jobs=2)
    (x_start, x_end), (y_start, _), (z_start, z_end) = (times(tmp_path, k) for k in "xyz")
    assert z_start < x_end and y_start >= min(x_end, z_end)
