"""Nothing lost, nothing mixed: a training run killed at its final save is not counted done and
its rerun finishes the stage with every figure; one run per folder; a checkpoint of other tokens
is refused; completion markers and locks on their own."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_vqgan import dataset_cache, tiny_config  # noqa: F401  (pytest fixtures)
from train_helpers import load_training_script, tiny_train_args

from te_vqgan.files import (
    COMPLETION_MARKER,
    FolderLockedError,
    folder_is_complete,
    folder_lock,
    write_completion_marker,
)


REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs train_vqgan.py and SIGKILLs itself right after the final save has moved metrics.json into
# the output folder (the card and the completion marker not yet there): the moment of the bug.
KILL_AT_FINAL_SAVE = r"""
import os, runpy, signal, sys
real = os.replace
def replace(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    if ".final.tmp" in str(src) and os.path.basename(str(dst)) == "metrics.json" and ".final.tmp" not in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.slow
def test_a_run_killed_at_its_final_save_is_not_done_and_the_rerun_finishes_it(
    tiny_config, tmp_path, mnist_dir, dataset_cache
):
    from te_vqgan.reproduce import Step

    out = tmp_path / "run"
    args = tiny_train_args(tiny_config, out, mnist_dir, dataset_cache)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_FINAL_SAVE, str(REPO_ROOT / "training" / "train_vqgan.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "metrics.json").is_file() and not (out / COMPLETION_MARKER).exists()  # the bug's moment
    step = Step("stage1/x", "stage1", out, "metrics.json", command=[], resumable=True)
    assert not folder_is_complete(out) and not step.done  # reproduce would redo it, not skip it

    rerun = subprocess.run(
        [sys.executable, str(REPO_ROOT / "training" / "train_vqgan.py"), *args, "--resume_from_checkpoint", "latest"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]  # the killed run's stale lock did not block it
    assert folder_is_complete(out) and step.done
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["global_step"] == 6 and "final_loss" in metrics
    )  # the last step's figures came back from checkpoint-6
    listed = json.loads((out / COMPLETION_MARKER).read_text())["files"]
    assert {"metrics.json", "README.md", "config.json", "diffusion_pytorch_model.safetensors"} <= set(listed)
    assert (out / "diffusion_pytorch_model.safetensors").stat().st_mode & 0o044  # published readable, not 0600
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_two_runs_on_one_folder_cannot_run_at_once(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "run"
    script = REPO_ROOT / "training" / "train_vqgan.py"
    first = subprocess.Popen(
        [
            sys.executable,
            str(script),
            *tiny_train_args(tiny_config, out, mnist_dir, dataset_cache, "--max_train_steps", "400"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while not (out / ".lock").is_file():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, str(script), *tiny_train_args(tiny_config, out, mnist_dir, dataset_cache)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert (
            second.returncode == 2 and "is in use by training" in second.stderr and f"pid {first.pid}" in second.stderr
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_markers_vouch_for_their_files(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"1234")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text("{}")
    assert not folder_is_complete(tmp_path)
    write_completion_marker(tmp_path, ["weights.bin", "sub"])
    assert folder_is_complete(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"12")  # truncated after the marker
    assert not folder_is_complete(tmp_path)
    (tmp_path / COMPLETION_MARKER).write_text("{broken")
    assert not folder_is_complete(tmp_path)


def test_a_lock_names_its_owner_and_a_stale_one_is_taken_over(tmp_path):
    with folder_lock(tmp_path, "a test"):
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid"] == os.getpid() and owner["what"] == "a test"
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "command": "init"}))
    with pytest.raises(FolderLockedError, match=r"in use by another run \(pid 1 on"):
        with folder_lock(tmp_path):
            pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with folder_lock(tmp_path):  # its process is gone: taken over
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_checkpoint_of_other_tokens_is_refused(tmp_path):
    script = load_training_script("train_generator")
    stage = script.GeneratorStage.__new__(script.GeneratorStage)  # only what the check reads
    stage.args = type("Args", (), {"tokenized_dataset": "tokens-b"})()
    stage.quantizer_info = type("Info", (), {"fingerprint": "b" * 64})()
    assert stage.checkpoint_state() == {"quantizer_fingerprint": "b" * 64}
    stage.check_resume_state({"quantizer_fingerprint": "b" * 64}, tmp_path)
    stage.check_resume_state({}, tmp_path)  # a checkpoint saved before fingerprints: accepted
    with pytest.raises(
        ValueError, match=r"another quantizer \(fingerprint aaaaaaaaaaaa\).*'tokens-b' \(bbbbbbbbbbbb\)"
    ):
        stage.check_resume_state({"quantizer_fingerprint": "a" * 64}, tmp_path / "checkpoint-4")


def test_a_new_run_into_a_folder_with_checkpoints_is_refused(tmp_path):
    from test_training_engine import ToyStage, engine_args

    from te_vqgan.training.engine import TrainingEngine

    TrainingEngine(engine_args(tmp_path / "run")).fit(ToyStage())
    with pytest.raises(
        ValueError, match=r"holds checkpoints of an earlier run \(checkpoint-2, checkpoint-4, checkpoint-5\)"
    ):
        TrainingEngine(engine_args(tmp_path / "run")).fit(ToyStage())
    assert (
        TrainingEngine(engine_args(tmp_path / "run", "--resume_from_checkpoint", "latest")).fit(ToyStage()).global_step
        == 5
    )
