"""A small in-memory Hugging Face Hub on 127.0.0.1, for testing pushes and loads without the network.

It serves the endpoints ``huggingface_hub`` (2.x, httpx2 transport) uses to create repos and branches,
commit files (``preupload`` answers "regular" for every file, so contents arrive inline, base64, in the
NDJSON commit), read repo info and trees, and download files (``HEAD``/``GET .../resolve/...``), with
the Hub's error headers (``X-Error-Code``) so clients raise their real exceptions.

Usage (see ``hub_environment``): start a :class:`FakeHub`, point ``HF_ENDPOINT`` and huggingface_hub's
import-time constants at it, and keep every cache under a temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

WRITE_TOKEN = "hf_fake_write_token"
READ_TOKEN = "hf_fake_read_token"
USER = "fsm-tester"


def git_blob_sha(data: bytes) -> str:
    """The git object id of a file's content (what the Hub reports as a regular file's oid/ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: Dict[str, bytes]
    message: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: Dict[str, str] = field(default_factory=dict)  # branch / refs/pr/N -> commit sha
    commits: Dict[str, Commit] = field(default_factory=dict)
    num_prs: int = 0

    def resolve(self, revision: str) -> Optional[Commit]:
        sha = self.refs.get(revision, revision)
        return self.commits.get(sha)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None, headers: Optional[dict] = None,
                 body: Optional[dict] = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.body = {"error": message, **(body or {})}


class FakeHub:
    """An in-memory Hub served over HTTP on 127.0.0.1 (a random free port), in a background thread.

    ``tokens`` maps token -> ``"write"`` or ``"read"``. Repos are public unless created private; private
    repos are invisible without a token. ``requests`` logs ``(method, path, status)``;
    ``unhandled`` lists requests no route matched (a test can assert it stays empty).
    Set ``truncate_downloads = True`` to serve file bodies shorter than announced (a broken transfer).
    """

    def __init__(self, tokens: Optional[Dict[str, str]] = None):
        self.tokens = dict(tokens if tokens is not None else {WRITE_TOKEN: "write", READ_TOKEN: "read"})
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str, int]] = []
        self.unhandled: List[str] = []
        self.truncate_downloads = False
        self._lock = threading.RLock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- state helpers used by tests -------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> Dict[str, bytes]:
        with self._lock:
            commit = self.repos[repo_id].resolve(revision)
            return dict(commit.files)

    def count(self, method: str, path_fragment: str = "") -> int:
        """How many requests with this method (and path fragment) reached the server."""
        return sum(1 for m, p, _ in self.requests if m == method and path_fragment in p)

    # -- internals ---------------------------------------------------------------------------------------
    def _new_commit(self, repo: Repo, parent: Optional[Commit], files: Dict[str, bytes], message: str) -> Commit:
        self._counter += 1
        digest = hashlib.sha1(f"{repo.repo_id}|{self._counter}|{message}".encode()).hexdigest()
        commit = Commit(sha=digest, files=dict(parent.files) if parent else {}, message=message)
        commit.files.update(files)
        repo.commits[commit.sha] = commit
        return commit

    def _access(self, token: Optional[str], repo_id: Optional[str], write: bool) -> Optional[Repo]:
        """Check the token; return the repo (``None`` when it does not exist and ``repo_id`` is None)."""
        role = None
        if token is not None:
            role = self.tokens.get(token)
            if role is None:
                raise HubError(401, "Invalid credentials in Authorization header")
        if write and role is None:
            raise HubError(401, "You must be authenticated to write", code=None)
        if write and role != "write":
            raise HubError(403, "This token does not have write access")
        if repo_id is None:
            return None
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and role is None):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        # -- plumbing --------------------------------------------------------------------------------
        def _token(self) -> Optional[str]:
            auth = self.headers.get("Authorization")
            return auth.split(" ", 1)[1].strip() if auth and auth.lower().startswith("bearer ") else None

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None, head: bool = False) -> None:
            self.send_response(status)
            headers = dict(headers or {})
            headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head and body:
                self.wfile.write(body)
            hub.requests.append((self.command, self.path, status))

        def _json(self, status: int, data, headers: Optional[dict] = None) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                with hub._lock:
                    handled = self._route(parts, query)
                if not handled:
                    hub.unhandled.append(f"{self.command} {self.path}")
                    self._json(404, {"error": f"fake hub: no route for {self.command} {url.path}"})
            except HubError as err:
                headers = {"X-Error-Message": err.message, **err.headers}
                if err.code:
                    headers["X-Error-Code"] = err.code
                self._send(err.status, json.dumps(err.body).encode(), headers,
                           head=self.command == "HEAD")  # fmt: skip

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch

        # -- routes ----------------------------------------------------------------------------------
        def _route(self, parts: List[str], query: Dict[str, str]) -> bool:
            method, token = self.command, self._token()
            if parts[:2] == ["api", "whoami-v2"] and method == "GET":
                hub._access(token, None, write=False)
                if token is None:
                    raise HubError(401, "Invalid credentials in Authorization header")
                self._json(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": hub.tokens[token]}}})
                return True
            if parts[:3] == ["api", "repos", "create"] and method == "POST":
                return self._create_repo(token)
            if parts[:2] == ["api", "validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(parts) >= 5 and parts[:2] == ["api", "models"]:
                repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], parts[5:]
                return self._repo_api(method, token, repo_id, action, rest, query)
            if len(parts) == 4 and parts[:2] == ["api", "models"] and method == "GET":
                return self._repo_info(token, f"{parts[2]}/{parts[3]}", "main")
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(token, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            return False

        def _create_repo(self, token) -> bool:
            hub._access(token, None, write=True)
            payload = json.loads(self._body() or b"{}")
            repo_type = payload.get("type") or "model"
            if repo_type != "model":
                raise HubError(400, f"fake hub: only model repos, got {repo_type!r}")
            repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
            if repo_id in hub.repos:
                raise HubError(409, "You already created this model repo", body={"url": f"{hub.endpoint}/{repo_id}"})
            private = payload.get("private") or payload.get("visibility") == "private"
            repo = Repo(repo_id=repo_id, private=bool(private))
            gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            initial = hub._new_commit(repo, None, {".gitattributes": gitattributes}, "initial commit")
            repo.refs["main"] = initial.sha
            hub.repos[repo_id] = repo
            self._json(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
            return True

        def _validate_yaml(self) -> bool:
            content = json.loads(self._body()).get("content", "")
            errors = []
            if content.startswith("---"):
                try:
                    header = content.split("---", 2)[1]
                    if not isinstance(yaml.safe_load(header) or {}, dict):
                        errors.append({"message": "metadata is not a mapping"})
                except (IndexError, yaml.YAMLError) as err:
                    errors.append({"message": f"invalid YAML: {err}"})
            self._json(400 if errors else 200, {"errors": errors, "warnings": []})
            return True

        def _repo_api(self, method, token, repo_id, action, rest, query) -> bool:
            if action == "revision" and method == "GET" and rest:
                return self._repo_info(token, repo_id, "/".join(rest))
            if action == "tree" and method == "GET" and rest:
                recursive = query.get("recursive") in ("1", "true", "True")
                return self._tree(token, repo_id, rest[0], "/".join(rest[1:]), recursive)
            if action == "preupload" and method == "POST" and rest:
                return self._preupload(token, repo_id, "/".join(rest))
            if action == "commit" and method == "POST" and rest:
                return self._commit(token, repo_id, "/".join(rest), query.get("create_pr") == "1")
            if action == "branch" and method == "POST" and rest:
                return self._create_branch(token, repo_id, "/".join(rest))
            return False

        def _repo_info(self, token, repo_id, revision) -> bool:
            repo = hub._access(token, repo_id, write=False)
            commit = hub._revision(repo, revision)
            self._json(200, {
                "id": repo_id, "modelId": repo_id, "sha": commit.sha, "private": repo.private,
                "siblings": [{"rfilename": name} for name in sorted(commit.files)],
            })  # fmt: skip
            return True

        def _tree(self, token, repo_id, revision, path, recursive) -> bool:
            repo = hub._access(token, repo_id, write=False)
            commit = hub._revision(repo, revision)
            prefix = f"{path.rstrip('/')}/" if path else ""
            entries, folders = [], set()
            for name in sorted(commit.files):
                if not name.startswith(prefix):
                    continue
                relative = name[len(prefix):]
                parents = relative.split("/")[:-1]
                for depth in range(1, len(parents) + 1):
                    if recursive or depth == 1:
                        folders.add(prefix + "/".join(parents[:depth]))
                if recursive or not parents:
                    data = commit.files[name]
                    entries.append({"type": "file", "path": name, "size": len(data), "oid": git_blob_sha(data)})
            if path and not entries and not folders:
                raise HubError(404, f"{path} does not exist", code="EntryNotFound")
            entries += [
                {"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)
            ]
            self._json(200, entries)
            return True

        def _preupload(self, token, repo_id, revision) -> bool:
            repo = hub._access(token, repo_id, write=True)
            commit = hub._revision(repo, revision)
            files = json.loads(self._body())["files"]
            answer = []
            for f in files:
                existing = commit.files.get(f["path"])
                answer.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": git_blob_sha(existing) if existing is not None else None})  # fmt: skip
            self._json(200, {"files": answer, "commitOid": commit.sha})
            return True

        def _commit(self, token, repo_id, revision, create_pr) -> bool:
            repo = hub._access(token, repo_id, write=True)
            parent = hub._revision(repo, revision)
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            header = next(item["value"] for item in lines if item["key"] == "header")
            added, deleted = {}, []
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"fake hub: unsupported encoding {value.get('encoding')!r}")
                    added[value["path"]] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                elif key == "lfsFile":
                    raise HubError(400, "fake hub: LFS uploads are not implemented (preupload says 'regular')")
            commit = hub._new_commit(repo, parent, added, header["summary"])
            for path in deleted:
                for name in [n for n in commit.files if n == path or n.startswith(path.rstrip("/") + "/")]:
                    del commit.files[name]
            pr_url = None
            if create_pr:
                repo.num_prs += 1
                repo.refs[f"refs/pr/{repo.num_prs}"] = commit.sha
                pr_url = f"{hub.endpoint}/{repo_id}/discussions/{repo.num_prs}"
            else:
                repo.refs[revision] = commit.sha
            self._json(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit.sha}", "commitOid": commit.sha,
                             "pullRequestUrl": pr_url, "success": True})  # fmt: skip
            return True

        def _create_branch(self, token, repo_id, branch) -> bool:
            repo = hub._access(token, repo_id, write=True)
            payload = json.loads(self._body() or b"{}")
            if branch in repo.refs:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = hub._revision(repo, payload.get("startingPoint") or "main")
            repo.refs[branch] = start.sha
            self._json(200, {})
            return True

        def _resolve(self, token, repo_id, revision, filename) -> bool:
            head = self.command == "HEAD"
            repo = hub._access(token, repo_id, write=False)
            commit = hub._revision(repo, revision)
            if filename not in commit.files:
                raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.sha})
            data = commit.files[filename]
            headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha(data)}"',
                       "Content-Type": "application/octet-stream"}  # fmt: skip
            if head:
                self._send(200, data, headers, head=True)
                return True
            start = 0
            requested = self.headers.get("Range", "")
            if requested.startswith("bytes=") and requested[6:].split("-")[0].isdigit():
                start = int(requested[6:].split("-")[0])
            body = data[start:]
            if hub.truncate_downloads:
                body = body[: len(body) // 2]
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206 if start else 200, body, headers)
            return True

    return Handler


@contextlib.contextmanager
def hub_environment(hub: FakeHub, home, monkeypatch):
    """Point huggingface_hub / transformers at ``hub`` with every cache under ``home``, online.

    ``HF_ENDPOINT``, offline mode and cache paths are read into ``huggingface_hub.constants`` at import, so
    the constants are patched too (and restored by ``monkeypatch``); the environment variables are set
    for subprocesses. Yields the hub cache folder.
    """
    import huggingface_hub.constants as constants
    import transformers.utils.hub as transformers_hub

    home = str(home)
    cache = f"{home}/hub"
    env = {
        "HF_ENDPOINT": hub.endpoint, "HF_HOME": home, "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_MODULES_CACHE": f"{home}/modules", "HF_TOKEN_PATH": f"{home}/token",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    patched = {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False, "HF_HOME": home, "HF_HUB_CACHE": cache, "HUGGINGFACE_HUB_CACHE": cache,
        "HF_TOKEN_PATH": f"{home}/token", "HF_STORED_TOKENS_PATH": f"{home}/stored_tokens",
        "HF_HUB_DISABLE_TELEMETRY": True,
    }  # fmt: skip
    for key, value in patched.items():
        monkeypatch.setattr(constants, key, value)
    monkeypatch.setattr(transformers_hub, "_hf_api", None)  # its HfApi caches the endpoint
    yield cache


def go_offline(monkeypatch) -> None:
    """Switch huggingface_hub to offline mode (``HF_HUB_OFFLINE=1``) inside a :func:`hub_environment`."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
