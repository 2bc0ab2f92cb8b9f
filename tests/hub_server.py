"""A local stand-in for the Hugging Face Hub, so that the real `huggingface_hub` client can push and pull in tests.

`LocalHub` is a small HTTP server (stdlib `http.server`, one thread per request, bound to 127.0.0.1 on a
free port) that speaks the part of the Hub API that `create_repo`, `upload_folder` / `upload_file` /
`create_commit`, `ModelCard.push_to_hub`, `hf_hub_download`, `snapshot_download` and diffusers'
`push_to_hub` / `from_pretrained` use, for model, dataset and space repos:

=====================================================  ==========================================================
`GET  /api/whoami-v2`                                  the user the token belongs to
`POST /api/repos/create`, `DELETE /api/repos/delete`   409 on an existing repo (the client turns it into
                                                       `exist_ok`), 404 `RepoNotFound` on a missing one
`POST /api/validate-yaml`                              the README.md metadata check (parsed with PyYAML)
`GET  /api/{type}s/{repo_id}[/revision/{rev}]`         repo info: `sha`, `siblings` (`?blobs=true`: sizes, oids)
`GET  /api/{type}s/{repo_id}/tree/{rev}[/{path}]`      tree listing, `?recursive=true`, `Link` header pagination
`POST /api/{type}s/{repo_id}/paths-info/{rev}`         info on given paths
`POST /api/{type}s/{repo_id}/preupload/{rev}`          every file is "regular" (no LFS, no Xet), with its
                                                       remote git oid so that unchanged files are skipped
`POST /api/{type}s/{repo_id}/commit/{rev}`             NDJSON body: `header`, `file` (base64), `deletedFile`,
                                                       `deletedFolder`; `parentCommit` is checked (412)
`GET|HEAD /[datasets/|spaces/]{repo_id}/resolve/{rev}/{path}`
                                                       the file, with `X-Repo-Commit`, `ETag` (the git blob
                                                       oid, like the Hub for non-LFS files), `Content-Length`;
                                                       `Range: bytes=a-[b]` answers 206
=====================================================  ==========================================================

Errors carry the Hub's `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`), which is
how the client picks `RepositoryNotFoundError`, `RevisionNotFoundError` or `EntryNotFoundError`.

How the client is kept off Xet: the client uses Xet only when the server asks for it, i.e. when preupload
answers `"lfs"` (upload) or when a download response carries an `X-Xet-Hash` header / a tree entry a `xetHash`
(download). This server does neither, so every file travels inline, base64, in the commit body and comes back
over plain HTTP. With `hf_xet` installed, `upload_folder` still takes its pipelined path (it creates a
`XetSession` object but sends it nothing), which is the path users get, so that is what these tests exercise.

Repos live in memory (branches, commits, file -> blob maps) with the blobs on disk under the server's root
folder, content-addressed by their git oid. Every commit is kept, so a file can be fetched at an older commit
hash. Writes need the hub's token (`Authorization: Bearer ...`, else 401); reads do not, and `private` is
recorded but not enforced.

Not implemented (a clear 4xx answer, or a 404 naming the route): branches other than `main`, tags, pull
requests (`create_pr=True`), LFS and Xet transfers, `.gitignore` rules in preupload, `expand=true` details
(`lastCommit`, security), and the rest of the API (discussions, collections, Spaces runtime, ...). Because of
the missing LFS, `datasets.Dataset.push_to_hub` does not work here: it deletes its temporary Parquet shards
right after `preupload_lfs_files`, counting on the Hub to answer "lfs" (content uploaded before the commit),
whereas "regular" content is read at commit time. Serving it would take the LFS batch API
(`{repo}.git/info/lfs/objects/batch` + PUT) *and* `HF_HUB_DISABLE_XET=1`, since Xet storage cannot be served.

Pointing the client at the server inside one pytest process (the `local_hub` fixture). `huggingface_hub` reads
`HF_ENDPOINT`, `HF_HOME`, `HF_HUB_OFFLINE` ... once, at import, into module constants, and other modules copy
some of them at their own import (`from huggingface_hub.constants import HF_HUB_OFFLINE` in diffusers,
`datasets.config.HF_ENDPOINT`, the module-level `HfApi()` behind `huggingface_hub.create_repo`, whose
`endpoint` was fixed at import). Setting the environment variable inside a test is therefore not enough. The
fixture does three things:

1. sets the environment variables (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, `HF_HUB_CACHE`, and removes
   `HF_HUB_OFFLINE` ...), so that subprocesses (training scripts run by a test) and modules imported later
   see the local hub;
2. patches, in every already imported module of huggingface_hub / diffusers / transformers / datasets, the
   attributes named in `_library_settings` (found by name, so each `from ... import X` copy is caught) and
   the module-level `HfApi` instance, all restored after the test;
3. installs a `huggingface_hub` HTTP client that refuses any request not addressed to the local hub, so that
   a copy of the endpoint the patching missed fails at once with a message naming the URL, instead of
   retrying against the internet for 20 s (or reaching the real Hub on a machine that has internet).

Running the push/pull in a subprocess with the environment set would also work (it is what training scripts
launched by a test get, see `test_subprocess_sees_local_hub_through_environment`), but costs an interpreter
and a torch import per call, and hides tracebacks; patching keeps the tests in-process and fast. A library
imported for the first time *during* such a test reads the environment and keeps the local endpoint after
it: import the libraries a test uses at the top of its module.

Usage in a test module::

    from hub_server import local_hub  # noqa: F401  (pytest fixture)

    def test_push(local_hub):
        HfApi().create_repo("user/x")
        ...
        assert local_hub.files("user/x") == {...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest
import yaml


__all__ = ["LocalHub", "HubError", "git_blob_oid", "local_hub", "use_local_hub"]

logger = logging.getLogger(__name__)

DEFAULT_USER = "user"
DEFAULT_TOKEN = "hf_localhubtesttoken"
DEFAULT_BRANCH = "main"
REPO_TYPES = ("model", "dataset", "space")
# URL prefix of each repo type in file URLs (`/datasets/org/name/resolve/...`), as in `huggingface_hub.constants`.
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Repo type of each plural in API URLs (`/api/datasets/org/name/...`).
REPO_TYPE_OF_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
# Same character set as the client's `validate_repo_id`.
REPO_NAME_RE = re.compile(r"^[\w.\-]{1,96}$")
# What the Hub puts in a new repo: an "initial commit" holding a `.gitattributes` (here abridged).
INITIAL_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_oid(content: bytes) -> str:
    """The git oid of a blob: the Hub's `oid` / `ETag` of a non-LFS file (`huggingface_hub.utils.sha.git_hash`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An error answered to the client: HTTP status, Hub error code (`X-Error-Code`) and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


# ----------------------------------------------------------------------------------------------- storage


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, str]  # path in repo -> blob oid
    sent: list[str] = field(default_factory=list)  # paths whose content came in this commit
    deleted: list[str] = field(default_factory=list)  # paths removed by this commit


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # branch -> head commit oid
    commits: dict[str, _Commit] = field(default_factory=dict)


class _Store:
    """Repos in memory, blobs on disk under `root/blobs`, one lock around everything."""

    def __init__(self, root: Path):
        self.blob_dir = root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], _Repo] = {}
        self._counter = 0

    # -- blobs
    def put_blob(self, content: bytes) -> str:
        oid = git_blob_oid(content)
        path = self.blob_dir / oid
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(content)
            tmp.replace(path)
        return oid

    def blob_path(self, oid: str) -> Path:
        return self.blob_dir / oid

    def blob_size(self, oid: str) -> int:
        return self.blob_path(oid).stat().st_size

    # -- repos
    def repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(
                404,
                f"Repository Not Found: no {repo_type} repo {repo_id!r} on the local hub.",
                code="RepoNotFound",
            )
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """Create the repo with its initial commit; `False` if it already exists."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            self.repos[(repo_type, repo_id)] = repo
            blob = self.put_blob(INITIAL_GITATTRIBUTES)
            commit = self._add_commit(
                repo,
                DEFAULT_BRANCH,
                parent=None,
                title="initial commit",
                description="",
                files={".gitattributes": blob},
            )
            commit.sent = [".gitattributes"]
            return True

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            self.repo(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]

    def resolve(self, repo: _Repo, revision: str) -> _Commit:
        """A branch name or a full commit hash -> the commit."""
        with self.lock:
            if revision in repo.branches:
                return repo.commits[repo.branches[revision]]
            if revision in repo.commits:
                return repo.commits[revision]
        raise HubError(
            404,
            f"Invalid rev id: {revision!r} is neither a branch nor a commit of {repo.repo_id!r}.",
            code="RevisionNotFound",
        )

    def commit(
        self,
        repo: _Repo,
        branch: str,
        *,
        title: str,
        description: str,
        parent_commit: str | None,
        added: dict[str, bytes],
        deleted_files: list[str],
        deleted_folders: list[str],
    ) -> _Commit:
        with self.lock:
            if branch not in repo.branches:
                raise HubError(
                    404,
                    f"Invalid rev id: {branch!r} is not a branch of {repo.repo_id!r} (the local hub only has "
                    f"{sorted(repo.branches)}; commits go to a branch).",
                    code="RevisionNotFound",
                )
            head = repo.commits[repo.branches[branch]]
            if parent_commit is not None and parent_commit != head.oid:
                raise HubError(
                    412,
                    f"A commit has happened since. Please refresh and try again. (parentCommit {parent_commit} "
                    f"is not the head {head.oid} of {branch!r})",
                )
            files = dict(head.files)
            for path in deleted_files:
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path!r}", code="EntryNotFound")
                del files[path]
            for folder in deleted_folders:
                prefix = folder.rstrip("/") + "/"
                inside = [path for path in files if path.startswith(prefix)]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {folder!r}", code="EntryNotFound")
                for path in inside:
                    del files[path]
            for path, content in added.items():
                files[path] = self.put_blob(content)
            commit = self._add_commit(repo, branch, parent=head.oid, title=title, description=description, files=files)
            commit.sent = sorted(added)
            commit.deleted = sorted(set(head.files) - set(files))
            return commit

    def _add_commit(
        self, repo: _Repo, branch: str, *, parent: str | None, title: str, description: str, files: dict[str, str]
    ) -> _Commit:
        self._counter += 1
        seed = json.dumps(
            [repo.repo_type, repo.repo_id, parent, title, sorted(files.items()), self._counter, time.time()]
        )
        commit = _Commit(
            oid=hashlib.sha1(seed.encode()).hexdigest(),
            parent=parent,
            title=title,
            description=description,
            date=_now(),
            files=files,
        )
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


def _folders(files: dict[str, str]) -> dict[str, str]:
    """Every folder of a commit's file map -> a stable id derived from its contents."""
    contents: dict[str, list[str]] = {}
    for path, oid in files.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            contents.setdefault("/".join(parts[:depth]), []).append(f"{path}:{oid}")
    return {folder: hashlib.sha1("\n".join(sorted(items)).encode()).hexdigest() for folder, items in contents.items()}


# ----------------------------------------------------------------------------------------------- HTTP


_API_REPO = r"^/api/(?P<plural>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_RESOLVE = r"^/(?:(?P<prefix>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
_ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"^/api/whoami-v2$", "whoami"),
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("DELETE", r"^/api/repos/delete$", "delete_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", _API_REPO + r"$", "repo_info"),
        ("GET", _API_REPO + r"/revision/(?P<rev>[^/]+)$", "repo_info"),
        ("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", "tree"),
        ("POST", _API_REPO + r"/paths-info/(?P<rev>[^/]+)$", "paths_info"),
        ("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)$", "commit"),
        ("GET", _RESOLVE, "resolve"),
        ("HEAD", _RESOLVE, "resolve"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 with `Connection: close` on every answer: no idle keep-alive threads outlive the server.
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("local hub: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.close_connection = True
        status = 500
        try:
            body = self._read_body()
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(url.path) if route_method == method else None
                if match:
                    # Segments are unquoted one by one: a revision like `refs%2Fpr%2F1` stays one segment.
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    status = getattr(self, f"_{name}")(body=body, **params)
                    break
            else:
                raise HubError(404, f"The local hub does not implement {method} {url.path}.")
        except HubError as error:
            status = error.status
            self._send_error(error)
        except Exception as error:  # a bug in this server: answer 500 with the cause, keep serving
            logger.exception("local hub: %s %s failed", method, self.path)
            status = 500
            self._send_error(HubError(500, f"local hub error: {error!r}"))
        self.server.hub._record(method, self.path, status)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, content_length: int | None = None
    ) -> int:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> int:
        return self._send(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _send_error(self, error: HubError) -> None:
        # Header values must be one line of ASCII (YAML errors span several lines).
        one_line = " ".join(error.message.split()).encode("ascii", "replace").decode()
        headers = {"X-Error-Message": one_line, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send_json(
            error.status,
            {"error": error.message, **({"errors": [{"message": error.message}]} if error.status == 400 else {})},
            headers,
        )

    def _json_body(self, body: bytes) -> dict:
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Request body is not JSON: {error}") from error
        if not isinstance(payload, dict):
            raise HubError(400, f"Request body must be a JSON object (got {type(payload).__name__}).")
        return payload

    def _require_token(self) -> None:
        expected = self.server.hub.token
        if self.headers.get("Authorization") != f"Bearer {expected}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, plural: str, ns: str, name: str) -> _Repo:
        return self.server.hub.store.repo(REPO_TYPE_OF_PLURAL[plural], f"{ns}/{name}")

    def _refuse_pull_requests(self) -> None:
        if self.query.get("create_pr", ["0"])[0] not in ("", "0", "false"):
            raise HubError(400, "The local hub does not implement pull requests (create_pr=True).")

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.server.hub.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    # -- endpoints
    def _whoami(self, body: bytes) -> int:
        self._require_token()
        hub = self.server.hub
        return self._send_json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(hub.user.encode()).hexdigest()[:24],
                "name": hub.user,
                "fullname": "Local Hub User",
                "email": f"{hub.user}@localhost",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local-hub", "role": "write"}},
            },
        )

    def _repo_id_from_payload(self, payload: dict) -> tuple[str, str]:
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}: the local hub knows {REPO_TYPES}.")
        name, namespace = payload.get("name"), payload.get("organization") or self.server.hub.user
        if not isinstance(name, str) or not REPO_NAME_RE.match(name) or not REPO_NAME_RE.match(namespace):
            raise HubError(400, f"Invalid repo name {namespace!r}/{name!r}.")
        return repo_type, f"{namespace}/{name}"

    def _create_repo(self, body: bytes) -> int:
        self._require_token()
        payload = self._json_body(body)
        repo_type, repo_id = self._repo_id_from_payload(payload)
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.server.hub.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}"
        if not self.server.hub.store.create_repo(repo_type, repo_id, private):
            # The client reads `url` from this 409 answer when `exist_ok=True`.
            return self._send_json(409, {"error": f"You already created this {repo_type} repo", "url": url})
        return self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, body: bytes) -> int:
        self._require_token()
        repo_type, repo_id = self._repo_id_from_payload(self._json_body(body))
        self.server.hub.store.delete_repo(repo_type, repo_id)
        return self._send_json(200, {})

    def _validate_yaml(self, body: bytes) -> int:
        content = self._json_body(body).get("content", "")
        match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", content, flags=re.DOTALL)
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as error:
                raise HubError(400, f"Invalid YAML in README.md metadata: {error}") from error
            if metadata is not None and not isinstance(metadata, dict):
                raise HubError(400, f"README.md metadata must be a YAML mapping (got {type(metadata).__name__}).")
        return self._send_json(200, {"errors": [], "warnings": []})

    def _repo_info(self, body: bytes, plural: str, ns: str, name: str, rev: str = DEFAULT_BRANCH) -> int:
        store = self.server.hub.store
        with store.lock:
            repo = self._repo(plural, ns, name)
            commit = store.resolve(repo, rev)
            with_blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
            siblings = [
                {"rfilename": path, **({"size": store.blob_size(oid), "blobId": oid} if with_blobs else {})}
                for path, oid in sorted(commit.files.items())
            ]
            return self._send_json(
                200,
                {
                    "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                    "id": repo.repo_id,
                    "author": ns,
                    "sha": commit.oid,
                    "lastModified": commit.date,
                    "createdAt": repo.created_at,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                },
            )

    def _entries(self, commit: _Commit, paths: list[str] | None, under: str, recursive: bool) -> list[dict]:
        """Tree entries (files and folders) of a commit: `paths` exactly, or those under `under`."""
        store = self.server.hub.store
        folders = _folders(commit.files)
        entries = [
            {"type": "file", "oid": oid, "size": store.blob_size(oid), "path": path}
            for path, oid in commit.files.items()
        ]
        entries += [{"type": "directory", "oid": oid, "size": 0, "path": path} for path, oid in folders.items()]
        if paths is not None:
            wanted = {path.strip("/") for path in paths}
            return sorted((entry for entry in entries if entry["path"] in wanted), key=lambda entry: entry["path"])
        prefix = f"{under}/" if under else ""
        depth = prefix.count("/")
        selected = [
            entry
            for entry in entries
            if entry["path"].startswith(prefix) and (recursive or entry["path"].count("/") == depth)
        ]
        # Folders first, then files, each sorted: the Hub's order.
        return sorted(selected, key=lambda entry: (entry["type"] != "directory", entry["path"]))

    def _tree(self, body: bytes, plural: str, ns: str, name: str, rev: str, path: str = "") -> int:
        hub = self.server.hub
        with hub.store.lock:
            commit = hub.store.resolve(self._repo(plural, ns, name), rev)
            under = path.strip("/")
            if under and under not in _folders(commit.files):
                raise HubError(
                    404,
                    f"{under!r} is not a folder at {rev!r}.",
                    code="EntryNotFound",
                    headers={"X-Repo-Commit": commit.oid},
                )
            recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries = self._entries(commit, None, under, recursive)
        cursor = self.query.get("cursor", ["0"])[0]
        if not cursor.isdigit():
            raise HubError(400, f"Invalid cursor {cursor!r}.")
        cursor = int(cursor)
        page = entries[cursor : cursor + hub.tree_page_size]
        headers = {}
        if cursor + hub.tree_page_size < len(entries):
            query = {key: values[0] for key, values in self.query.items()}
            query["cursor"] = str(cursor + hub.tree_page_size)
            headers["Link"] = f'<{hub.endpoint}{urlsplit(self.path).path}?{urlencode(query)}>; rel="next"'
        return self._send_json(200, page, headers)

    def _paths_info(self, body: bytes, plural: str, ns: str, name: str, rev: str) -> int:
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = self._json_body(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        with self.server.hub.store.lock:
            commit = self.server.hub.store.resolve(self._repo(plural, ns, name), rev)
            return self._send_json(200, self._entries(commit, paths, "", True))

    def _preupload(self, body: bytes, plural: str, ns: str, name: str, rev: str) -> int:
        self._require_token()
        self._refuse_pull_requests()
        files = self._json_body(body).get("files", [])
        with self.server.hub.store.lock:
            commit = self.server.hub.store.resolve(self._repo(plural, ns, name), rev)
            answer = [
                # "regular": the content comes inline in the commit (never "lfs", which would mean LFS or Xet).
                {
                    "path": file["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": commit.files.get(file["path"]),
                }
                for file in files
            ]
            return self._send_json(200, {"files": answer, "commitOid": commit.oid})

    def _commit(self, body: bytes, plural: str, ns: str, name: str, rev: str) -> int:
        self._require_token()
        self._refuse_pull_requests()
        repo = self._repo(plural, ns, name)
        header: dict | None = None
        added: dict[str, bytes] = {}
        deleted_files: list[str] = []
        deleted_folders: list[str] = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise HubError(
                    400, f"Commit line {number} is not a {{'key', 'value'}} JSON object: {error!r}"
                ) from error
            if key == "header":
                header = value
            elif key == "file":
                path = _check_path(value.get("path"))
                added[path] = _file_content(value, path)
            elif key == "deletedFile":
                deleted_files.append(_check_path(value.get("path")))
            elif key == "deletedFolder":
                deleted_folders.append(_check_path(value.get("path")))
            elif key == "lfsFile":
                raise HubError(400, f"LFS file {value.get('path')!r}: the local hub asked for regular uploads only.")
            else:
                raise HubError(400, f"Unknown commit operation {key!r} (line {number}).")
        if header is None or not header.get("summary"):
            raise HubError(400, "The commit needs a header with a non-empty summary.")
        commit = self.server.hub.store.commit(
            repo,
            rev,
            title=header["summary"],
            description=header.get("description", ""),
            parent_commit=header.get("parentCommit"),
            added=added,
            deleted_files=deleted_files,
            deleted_folders=deleted_folders,
        )
        return self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
            },
        )

    def _resolve(self, body: bytes, ns: str, name: str, rev: str, path: str, prefix: str = "") -> int:
        store = self.server.hub.store
        with store.lock:
            repo = store.repo(REPO_TYPE_OF_PLURAL.get(prefix, "model"), f"{ns}/{name}")
            commit = store.resolve(repo, rev)
            oid = commit.files.get(path)
            if oid is None:
                raise HubError(
                    404,
                    f"Entry not found: {path!r} at {rev!r}.",
                    code="EntryNotFound",
                    headers={"X-Repo-Commit": commit.oid},
                )
            blob = store.blob_path(oid)
        size = blob.stat().st_size
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{oid}"',
            "X-Repo-Commit": commit.oid,
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        start, end, status = 0, size, 200
        range_header = self.headers.get("Range")
        if range_header:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if not match or int(match.group(1)) >= max(size, 1):
                raise HubError(416, f"Unsatisfiable range {range_header!r} for a file of {size} bytes.")
            start = int(match.group(1))
            end = min(size, int(match.group(2)) + 1) if match.group(2) else size
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            status = 206
        if self.command == "HEAD":
            return self._send(status, headers=headers, content_length=end - start)
        with open(blob, "rb") as file:
            file.seek(start)
            return self._send(status, file.read(end - start), headers)


def _file_content(value: dict, path: str) -> bytes:
    encoding = value.get("encoding", "base64")
    if encoding not in ("base64", "utf-8"):
        raise HubError(400, f"Unknown encoding {encoding!r} for {path!r} (expected 'base64' or 'utf-8').")
    try:
        content = value["content"]
        return base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
    except (KeyError, ValueError, AttributeError) as error:
        raise HubError(400, f"Bad {encoding} content for {path!r}: {error!r}") from error


def _check_path(path: Any) -> str:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or any(part in ("", ".", "..") for part in path.rstrip("/").split("/"))
    ):
        raise HubError(400, f"Invalid path in repo: {path!r}.")
    return path.rstrip("/")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LocalHub


# ----------------------------------------------------------------------------------------------- public API


class LocalHub:
    """A Hub API server on 127.0.0.1, for tests. Start with `with LocalHub(root) as hub:` or `start()`/`stop()`.

    Args:
        root (`Path`): folder where the blobs are stored (a temporary folder; it is not cleaned by the server).
        user (`str`, *optional*, defaults to `"user"`): the user `whoami` answers, and the namespace of repos
            created without one.
        token (`str`, *optional*): the only token accepted on write endpoints and `whoami`.
        tree_page_size (`int`, *optional*, defaults to `1000`): entries per page of the tree listing (the Hub's);
            lower it to exercise the client's pagination.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        user: str = DEFAULT_USER,
        token: str = DEFAULT_TOKEN,
        tree_page_size: int = 1000,
    ):
        if tree_page_size < 1:
            raise ValueError(f"`tree_page_size` must be >= 1 (got {tree_page_size}).")
        self.root = Path(root)
        self.user = user
        self.token = token
        self.tree_page_size = tree_page_size
        self.store = _Store(self.root)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request, for debugging
        self._requests_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("The local hub is not started.")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        if self._server is not None:
            raise RuntimeError("The local hub is already started.")
        self._server = _Server(("127.0.0.1", 0), _Handler)  # port 0: a free port chosen by the OS
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-hub", daemon=True)
        self._thread.start()
        logger.info("local hub serving at %s (blobs in %s)", self.endpoint, self.root)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _record(self, method: str, path: str, status: int) -> None:
        with self._requests_lock:
            self.requests.append((method, path, status))

    # -- inspection, independent of the client
    def files(self, repo_id: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """Path -> content of every file of a repo at a revision, read from the server's storage."""
        with self.store.lock:
            commit = self.store.resolve(self.store.repo(repo_type, repo_id), revision)
            return {path: self.store.blob_path(oid).read_bytes() for path, oid in sorted(commit.files.items())}

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = DEFAULT_BRANCH) -> list[dict[str, Any]]:
        """The commits of a branch, newest first: `oid`, `title`, `sent` (paths whose content the commit carried)
        and `deleted` (paths it removed)."""
        with self.store.lock:
            repo = self.store.repo(repo_type, repo_id)
            history, oid = [], repo.branches[branch]
            while oid is not None:
                commit = repo.commits[oid]
                history.append({"oid": oid, "title": commit.title, "sent": commit.sent, "deleted": commit.deleted})
                oid = commit.parent
            return history


# ----------------------------------------------------------------------------------------------- the client

# Module attributes that hold an import-time copy of a Hub setting are patched by name in every imported module
# of these packages, so that each `from huggingface_hub.constants import X` copy is caught.
_PATCHED_PACKAGES = ("huggingface_hub", "diffusers", "transformers", "datasets")
_ENDPOINT_NAMES = ("ENDPOINT", "HF_ENDPOINT", "HUGGINGFACE_CO_RESOLVE_ENDPOINT")
_OFFLINE_NAMES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# Environment variables that would override or contradict the local hub's settings.
_UNSET_VARIABLES = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HUGGINGFACE_CO_STAGING",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_OIDC_RESOURCE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
)


def _library_settings(endpoint: str, hf_home: Path) -> dict[str, Any]:
    """Attribute name -> value while the local hub is in use (paths are converted to the type found)."""
    return {
        **dict.fromkeys(_ENDPOINT_NAMES, endpoint),
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",  # datasets.config
        **dict.fromkeys(_OFFLINE_NAMES, False),
        # huggingface_hub.constants (and a copy in diffusers.utils.constants)
        "HF_HOME": hf_home,
        "HF_HUB_CACHE": hf_home / "hub",
        "HUGGINGFACE_HUB_CACHE": hf_home / "hub",
        "HF_ASSETS_CACHE": hf_home / "assets",
        "HUGGINGFACE_ASSETS_CACHE": hf_home / "assets",
        "HF_TOKEN_PATH": hf_home / "token",
        "HF_STORED_TOKENS_PATH": hf_home / "stored_tokens",
        "HF_XET_CACHE": hf_home / "xet",
        "AGENT_HARNESSES_PATH": hf_home / ".agent_harnesses.json",
        "CHECK_FOR_UPDATE_DONE_PATH": hf_home / ".check_for_update_done",
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": hf_home / ".check_for_skill_update_done",
        "HF_MODULES_CACHE": hf_home / "modules",  # diffusers, transformers, datasets
        # datasets.config
        "HF_CACHE_HOME": hf_home,
        "HF_DATASETS_CACHE": hf_home / "datasets",
        "DOWNLOADED_DATASETS_PATH": hf_home / "datasets" / "downloads",
        "EXTRACTED_DATASETS_PATH": hf_home / "datasets" / "downloads" / "extracted",
    }


def _imported_library_modules() -> Iterator[Any]:
    for name, module in list(sys.modules.items()):
        if module is not None and name.split(".")[0] in _PATCHED_PACKAGES:
            yield module


@contextmanager
def use_local_hub(hub: LocalHub, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """Point `huggingface_hub` (and the libraries built on it) at `hub`, with a fresh HF home, while in the block.

    The HTTP client is restored on leaving the block, the environment and module attributes when `monkeypatch`
    is undone (end of the test). See the module docstring for why the environment alone is not enough.
    """
    import huggingface_hub
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _http

    endpoint = hub.endpoint
    hf_home.mkdir(parents=True, exist_ok=True)

    # 1. The environment: for subprocesses and for modules imported from now on.
    environment = {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": hub.token,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in _UNSET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # The hub is on loopback: no proxy from the environment may get in between.
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)

    # 2. Import-time copies, in every module already imported.
    settings = _library_settings(endpoint, hf_home)
    for module in _imported_library_modules():
        for name, value in settings.items():
            if name in vars(module):
                current = vars(module)[name]
                monkeypatch.setattr(module, name, type(current)(value) if isinstance(current, (str, Path)) else value)
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {hub_host(hub)})
    # `huggingface_hub.create_repo`, `upload_folder`, `model_info` ... are methods of this import-time instance.
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(hf_api.api, "_whoami_cache", {})

    # 3. A fresh HTTP client (built after NO_PROXY is set) that refuses to leave the local hub.
    hub_origin = urlsplit(endpoint)

    def stay_on_local_hub(request) -> None:
        if (request.url.host, request.url.port) != (hub_origin.hostname, hub_origin.port):
            raise RuntimeError(
                f"huggingface_hub sent a request to {request.url} during a local-hub test: a module still holds "
                f"another endpoint than {endpoint} (add its attribute to `_library_settings` in tests/hub_server.py)."
            )

    def guarded_client_factory():
        client = _http.default_client_factory()
        client.event_hooks = {**client.event_hooks, "request": [stay_on_local_hub, *client.event_hooks["request"]]}
        return client

    # There is no public getter for the factory in use: read it to put it back afterwards.
    previous_factory = _http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(guarded_client_factory)
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(previous_factory)


def hub_host(hub: LocalHub) -> str:
    return urlsplit(hub.endpoint).hostname


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A running `LocalHub` that `huggingface_hub`, diffusers, transformers and datasets talk to, in this process
    and in its subprocesses, with the hub's token in `HF_TOKEN` and a temporary HF home (`tmp_path / "hf_home"`)."""
    with LocalHub(tmp_path / "local_hub") as hub, use_local_hub(hub, tmp_path / "hf_home", monkeypatch):
        yield hub
