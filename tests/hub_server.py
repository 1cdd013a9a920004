"""A loopback Hugging Face Hub: just enough of the Hub's HTTP API for the real ``huggingface_hub``
client to create a model repository, commit files to it and download them back.

>>> with LoopbackHub() as hub:                       # doctest: +SKIP
...     hub.point_client_here(monkeypatch, tmp_path)  # ENDPOINT, URL template, cache, token
...     HfApi().create_repo("me/tiny"); ...; snapshot_download("me/tiny")

A fixture: ``with LoopbackHub() as hub: hub.point_client_here(monkeypatch, tmp_path); yield hub``
(``loopback_hub`` in ``tests/test_hub_push.py``). Served on ``127.0.0.1`` (port 0),
in a thread; nothing leaves the machine. Routes (model repositories only):

- ``POST /api/repos/create`` (409 when it exists), ``POST /api/validate-yaml``;
- ``POST /api/models/{repo}/branch/{branch}`` (409 when it exists);
- ``POST /api/models/{repo}/preupload/{rev}``: every file ``"regular"`` (base64 in the commit, no LFS);
- ``POST /api/models/{repo}/commit/{rev}``: the NDJSON commit (``header`` + ``file`` entries);
- ``GET /api/models/{repo}[/revision/{rev}]`` (sha + siblings), ``GET .../tree/{rev}`` (files, oids);
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``.

Every request needs ``Authorization: Bearer <hub.token>``; any other answers 401 with the Hub's
``Invalid credentials in Authorization header``. ``hub.requests`` records ``(method, path)``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

TOKEN = "hf_loopback_test_token"
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<op>revision|tree|preupload|commit|branch)/(?P<rev>[^/]+))?/?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a file (what the Hub calls a file's ``oid`` and sends as its ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """A repository: commits by sha (each a full snapshot ``path -> bytes``) and branches."""

    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        """The commit sha of a branch name or of a sha; None when unknown."""
        return self.branches.get(rev) or (rev if rev in self.commits else None)

    def commit(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        """A new commit: ``parent``'s files updated with ``files``; returns its sha (branches unmoved)."""
        snapshot = {**(self.commits[parent] if parent else {}), **files}
        listing = json.dumps({p: git_blob_sha(b) for p, b in sorted(snapshot.items())}).encode()
        sha = hashlib.sha1(listing + (parent or "").encode() + message.encode()).hexdigest()
        self.commits[sha], self.messages[sha] = snapshot, message
        return sha


class LoopbackHub:
    """The server (a context manager); ``url``, ``repos``, ``requests``, ``token``."""

    def __init__(self, token: str = TOKEN):
        self.token, self.repos, self.requests = token, {}, []
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``rev`` (a branch or a commit sha)."""
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.resolve(rev)])

    def point_client_here(self, monkeypatch, cache_dir) -> None:
        """Send the ``huggingface_hub`` client here: endpoint (and the URL template made from it at
        import), an empty cache in ``cache_dir``, online, no token file, ``HF_TOKEN`` = ours."""
        import huggingface_hub.constants as hc

        monkeypatch.setattr(hc, "ENDPOINT", self.url)
        monkeypatch.setattr(hc, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hc, "HF_TOKEN_PATH", str(cache_dir) + "/no-token-file")
        monkeypatch.setattr(hc, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", self.url)  # for a subprocess
        monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setenv("HF_TOKEN", self.token)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        # This server answers: a starved test process (parallel workers on 2 cores) must not read as a
        # silent Hub (maekit's default bound is 10 s; test_failures checks that bound on a silent one).
        monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "60")


class _Handler(http.server.BaseHTTPRequestHandler):
    server_hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, *, head: bool = False) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, message: str, code: str | None = None, *, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _authorised(self, head: bool = False) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server_hub.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header", head=head)
        return False

    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server_hub.requests.append((method, path))
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # read before answering
        if not self._authorised(head=method == "HEAD"):
            return
        if (m := _RESOLVE.match(path)) and method in ("GET", "HEAD"):
            return self._resolve(m["repo"], m["rev"], m["path"], head=method == "HEAD")
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(self.body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        if m := _API.match(path):
            return self._api(method, m["repo"], m["op"], m["rev"])
        self._error(404, f"no route {method} {path}")

    do_GET = lambda self: self._route("GET")
    do_HEAD = lambda self: self._route("HEAD")
    do_POST = lambda self: self._route("POST")

    # ------------------------------------------------------------------ routes
    def _create(self, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or 'me'}/{payload['name']}"
        if repo_id in self.server_hub.repos:  # the Hub's 409 names the repository's url too
            return self._json(409, {"error": "You already created this model repo",
                                    "url": f"{self.server_hub.url}/{repo_id}"})
        repo = Repo(private=payload.get("visibility") == "private")
        repo.branches["main"] = repo.commit(None, {".gitattributes": b"*.safetensors filter=lfs\n"}, "initial commit")
        self.server_hub.repos[repo_id] = repo
        self._json(200, {"url": f"{self.server_hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _api(self, method: str, repo_id: str, op: str | None, rev: str | None) -> None:
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        sha = repo.resolve(rev or "main")
        if op == "branch" and method == "POST":
            start = json.loads(self.body or b"{}").get("startingPoint") or "main"
            if rev in repo.branches:
                return self._error(409, f"Reference refs/heads/{rev} already exists")
            repo.branches[rev] = repo.resolve(start)
            return self._json(200, {})
        if sha is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if op == "preupload" and method == "POST":
            files = json.loads(self.body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                               "oid": None} for f in files]})
        if op == "commit" and method == "POST":
            return self._commit(repo_id, repo, rev, sha)
        files = repo.commits[sha]
        if op == "tree" and method == "GET":
            return self._json(200, [{"type": "file", "path": p, "size": len(b), "oid": git_blob_sha(b)}
                                    for p, b in sorted(files.items())])
        if op in (None, "revision") and method == "GET":
            return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                                    "siblings": [{"rfilename": p} for p in sorted(files)]})
        self._error(404, f"no route {method} {self.path}")

    def _commit(self, repo_id: str, repo: Repo, branch: str, parent: str) -> None:
        message, files = "", {}
        for line in self.body.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                message = item["value"]["summary"]
            elif item["key"] == "file" and item["value"].get("encoding") == "base64":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            else:  # lfsFile, deletedFile, ...: not needed by the tests
                return self._error(400, f"unsupported commit entry {item['key']!r}")
        sha = repo.commit(parent, files, message)
        repo.branches[branch] = sha
        self._json(200, {"commitUrl": f"{self.server_hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                         "success": True, "pullRequestUrl": None})

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self.server_hub.repos.get(repo_id)
        sha = repo.resolve(rev) if repo else None
        data = repo.commits[sha].get(path) if sha else None
        if data is None:
            code = "RepoNotFound" if repo is None else "RevisionNotFound" if sha is None else "EntryNotFound"
            return self._error(404, f"{code}: {repo_id}@{rev}/{path}", code, head=head)
        self._send(200, data, {"Content-Type": "application/octet-stream", "X-Repo-Commit": sha,
                               "ETag": f'"{git_blob_sha(data)}"', "Accept-Ranges": "bytes"}, head=head)

