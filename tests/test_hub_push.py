"""Push to and pull from a Hub with the real `huggingface_hub` client, against the local server of `hub_server.py`.

No network: the `local_hub` fixture serves the Hub API on 127.0.0.1 and refuses any other destination.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hub_server import local_hub  # noqa: F401  (pytest fixture)
from huggingface_hub import (
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    hf_api,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import get_session
from safetensors.torch import load as load_safetensors
from tiny_configs import TINY_TEVQ

from te_vqgan import TEVQModel


FOLDER = {
    "config.json": b'{"hidden_size": 8}\n',
    "weights/shard 1.bin": bytes(range(256)) * 64,  # binary, a space in the name, in a sub-folder
    "weights/shard-2.bin": b"\x00\xff" * 1000,
    "notes/deep/readme.txt": "héllo wörld\n".encode(),
}


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
    return root


def read_folder(root: str | Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in Path(root).rglob("*") if path.is_file()}


def without_gitattributes(files: dict[str, bytes]) -> dict[str, bytes]:
    """The Hub, and the local hub, start every repo with a `.gitattributes` commit."""
    assert ".gitattributes" in files
    return {path: content for path, content in files.items() if path != ".gitattributes"}


def test_client_points_at_local_hub_only(local_hub, tmp_path):
    assert constants.ENDPOINT == local_hub.endpoint
    assert hf_api.api.endpoint == local_hub.endpoint  # the instance behind `huggingface_hub.create_repo` & co
    assert hf_hub_url("a/b", "c.txt") == f"{local_hub.endpoint}/a/b/resolve/main/c.txt"
    assert constants.HF_HUB_CACHE == str(tmp_path / "hf_home" / "hub")
    assert HfApi().whoami()["name"] == local_hub.user
    # No imported module of these libraries still holds the default endpoint or a URL template built on it
    # (if one does, a library version grew a new import-time copy: add it to `_library_settings`).
    default = constants._HF_DEFAULT_ENDPOINT
    leftovers = [
        f"{name}.{attribute}"
        for name, module in list(sys.modules.items())
        if module is not None and name.split(".")[0] in ("huggingface_hub", "diffusers", "transformers", "datasets")
        for attribute, value in vars(module).items()
        if attribute != "_HF_DEFAULT_ENDPOINT"
        and isinstance(value, str)
        and (value == default or value.startswith((default + "/{", default + "/datasets/{")))
    ]
    assert leftovers == []
    # Any other destination is refused at once rather than retried against the internet.
    with pytest.raises(RuntimeError, match="during a local-hub test"):
        get_session().get(f"{default}/api/whoami-v2")


def test_upload_folder_and_download_identical_bytes(local_hub, tmp_path):
    api = HfApi()
    assert api.create_repo("user/folder-roundtrip").repo_id == "user/folder-roundtrip"
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("user/folder-roundtrip")
    assert conflict.value.response.status_code == 409
    assert api.create_repo("user/folder-roundtrip", exist_ok=True).repo_id == "user/folder-roundtrip"

    first = api.upload_folder(
        repo_id="user/folder-roundtrip",
        folder_path=write_folder(tmp_path / "v1", FOLDER),
        commit_message="First upload",
    )
    assert first.oid == api.repo_info("user/folder-roundtrip").sha
    assert without_gitattributes(local_hub.files("user/folder-roundtrip")) == FOLDER
    assert set(api.list_repo_files("user/folder-roundtrip")) == {".gitattributes", *FOLDER}
    for path, content in FOLDER.items():
        downloaded = hf_hub_download("user/folder-roundtrip", path)
        assert downloaded.startswith(constants.HF_HUB_CACHE)
        assert Path(downloaded).read_bytes() == content

    # Second commit: one file changed, one deleted, the others unchanged (not re-sent: same remote git oid).
    second_files = {**FOLDER, "config.json": b'{"hidden_size": 16}\n'}
    del second_files["weights/shard-2.bin"]
    second = api.upload_folder(
        repo_id="user/folder-roundtrip",
        folder_path=write_folder(tmp_path / "v2", second_files),
        commit_message="Second upload",
        delete_patterns=["weights/*"],
    )
    history = local_hub.commits("user/folder-roundtrip")
    assert [commit["title"] for commit in history] == ["Second upload", "First upload", "initial commit"]
    assert history[0]["sent"] == ["config.json"]
    assert history[0]["deleted"] == ["weights/shard-2.bin"]
    assert without_gitattributes(local_hub.files("user/folder-roundtrip")) == second_files

    local_hub.tree_page_size = 2  # make snapshot_download follow the tree listing's pages
    snapshot = snapshot_download("user/folder-roundtrip")
    assert Path(snapshot).name == second.oid
    assert without_gitattributes(read_folder(snapshot)) == second_files

    # The first commit is still served, by hash (fresh cache, so the bytes really come from the server).
    old = hf_hub_download(
        "user/folder-roundtrip", "weights/shard-2.bin", revision=first.oid, cache_dir=tmp_path / "c2"
    )
    assert Path(old).read_bytes() == FOLDER["weights/shard-2.bin"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/folder-roundtrip", "weights/shard-2.bin", cache_dir=tmp_path / "c2")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("user/folder-roundtrip", "config.json", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/no-such-repo", "config.json")


def test_tevq_model_push_to_hub_and_from_pretrained(local_hub):
    torch.manual_seed(0)
    model = TEVQModel(**TINY_TEVQ).eval()

    model.push_to_hub("user/tiny-tevq")

    pushed = local_hub.files("user/tiny-tevq")
    assert set(pushed) == {".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.safetensors"}
    config = json.loads(pushed["config.json"])
    assert config["_class_name"] == "TEVQModel"
    assert config["block_out_channels"] == list(TINY_TEVQ["block_out_channels"])
    weights = load_safetensors(pushed["diffusion_pytorch_model.safetensors"])
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
    assert "library_name: diffusers" in pushed["README.md"].decode()

    loaded = TEVQModel.from_pretrained("user/tiny-tevq").eval()

    assert type(loaded) is TEVQModel
    assert {key: value for key, value in loaded.config.items() if not key.startswith("_")} == json.loads(
        json.dumps({key: value for key, value in model.config.items() if not key.startswith("_")})
    )
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode_to_indices(images), model.encode_to_indices(images))
        assert torch.equal(loaded(images).sample, model(images).sample)


def test_dataset_repo_upload_and_download(local_hub, tmp_path):
    api = HfApi()
    files = {
        "README.md": b"---\nlicense: mit\n---\n# Tiny data\n",
        "data/train.csv": b"image,label\n0.png,3\n1.png,7\n",
        "data/test.csv": b"image,label\n2.png,1\n",
    }
    url = api.create_repo("user/tiny-data", repo_type="dataset")
    assert url.repo_type == "dataset" and url == f"{local_hub.endpoint}/datasets/user/tiny-data"

    commit = api.upload_folder(
        repo_id="user/tiny-data", repo_type="dataset", folder_path=write_folder(tmp_path / "d", files)
    )

    assert without_gitattributes(local_hub.files("user/tiny-data", repo_type="dataset")) == files
    assert api.dataset_info("user/tiny-data").sha == commit.oid
    assert sorted(api.list_repo_files("user/tiny-data", repo_type="dataset")) == [".gitattributes", *sorted(files)]
    train = hf_hub_download("user/tiny-data", "data/train.csv", repo_type="dataset")
    assert Path(train).read_bytes() == files["data/train.csv"]
    snapshot = snapshot_download("user/tiny-data", repo_type="dataset", allow_patterns=["data/*"])
    assert read_folder(snapshot) == {path: content for path, content in files.items() if path.startswith("data/")}
    # Repo types are separate namespaces, as on the Hub.
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("user/tiny-data")


def test_model_card_push_to_hub(local_hub):
    api = HfApi()
    api.create_repo("user/carded")
    card = ModelCard.from_template(
        ModelCardData(license="mit", library_name="diffusers", tags=["te-vqgan", "vq"]),
        model_description="A tiny TE-VQGAN for tests.",
    )

    card.push_to_hub("user/carded", commit_message="Add model card")

    assert local_hub.files("user/carded")["README.md"].decode() == str(card)
    assert local_hub.commits("user/carded")[0]["title"] == "Add model card"
    loaded = ModelCard.load("user/carded")
    assert loaded.data.license == "mit"
    assert loaded.data.tags == ["te-vqgan", "vq"]
    assert "A tiny TE-VQGAN for tests." in loaded.text
    # A commit on a stale parent is refused (412), like on the Hub.
    head = api.repo_info("user/carded").sha
    api.upload_file(path_or_fileobj=b"x", path_in_repo="extra.txt", repo_id="user/carded")
    card.text += "\nAn edit made on a stale copy.\n"
    with pytest.raises(HfHubHTTPError) as stale:
        card.push_to_hub("user/carded", parent_commit=head)
    assert stale.value.response.status_code == 412
    assert local_hub.files("user/carded")["README.md"].decode() != str(card)


def test_subprocess_sees_local_hub_through_environment(local_hub, tmp_path):
    # Training scripts run as subprocesses: they only get the environment, read at their own import.
    script = textwrap.dedent(
        """
        from huggingface_hub import HfApi, hf_hub_download, constants
        api = HfApi()
        api.create_repo("user/from-subprocess", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"written by a subprocess", path_in_repo="a.txt",
                        repo_id="user/from-subprocess", repo_type="dataset")
        print(hf_hub_download("user/from-subprocess", "a.txt", repo_type="dataset"))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    downloaded = Path(result.stdout.strip().splitlines()[-1])
    assert downloaded.is_relative_to(tmp_path / "hf_home")
    assert downloaded.read_bytes() == b"written by a subprocess"
    assert local_hub.files("user/from-subprocess", repo_type="dataset")["a.txt"] == b"written by a subprocess"
