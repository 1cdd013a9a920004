"""The documentation runs: every ```python / ```bash / ```shell / ```console block of README.md and
docs/**/*.md is executed here, the site builds with ``mkdocs build --strict``, and the generated
command-line reference lists every flag that ``maekit <command> -h`` prints.

How a page runs. The blocks of one page are the steps of one walk: they run in order, in one
temporary folder (the page's), Python blocks sharing one namespace. A test per block (its id names
the file and line); asking for block N runs the page's earlier blocks first. Every folder starts
with what :func:`_seed_folder` puts there (``cat.jpg``, ``my_images/``: what README examples take
for "your images"); tutorials create the rest themselves.

- ``maekit ...`` lines run in this process through ``maekit.cli.main`` (fast: torch is imported
  once); other lines (``curl``, ``python``, pipes) through ``bash``, with ``maekit`` on PATH.
  A line ending in `` &`` starts a background process, stopped when the page ends; a
  ``maekit app`` one is waited for until it answers. Each page has its own free port, which
  replaces the app's 7860 (given as ``--port``, and in the addresses): suites may run side by side. ``pip install 'maekit[X]'`` checks that the
  extra X exists (the test environment has every extra already).
- ``curl`` fails on an HTTP error status (``fail-with-body`` in the ``.curlrc`` of ``CURL_HOME``).
- Nothing reaches the network: ``MAEKIT_OFFLINE=1`` and ``HF_HUB_OFFLINE=1`` over a Hugging Face
  cache pre-filled with a tiny ``facebook/vit-mae-base`` (same layout and classes as the real one).
- ``<!-- docs-test: hub -->`` before a block: it runs online against the loopback Hugging Face Hub
  of ``tests/hub_server.py`` (``HF_ENDPOINT`` and a token pointed there; ``me/...`` repositories
  pushed by the page live there for the page's later hub blocks).
- ``<!-- docs-test: file path="NAME" -->`` before a block writes the block to NAME (a YAML file a
  later command reads) instead of running it.
- ``<!-- docs-test: skip reason="..." -->`` before a block: not run (a GPU, a cluster, hours, the
  real network). Its ``maekit`` command lines are still parsed with the command's own parser, and
  its Python compiled, so a renamed flag fails here too. Every such block is listed in MARKED.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, python_env

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN_LANGS = {"python", "bash", "shell", "console"}

# Every block the suite does not run, and why: (file, reason). One place to review.
MARKED = [
    ("README.md", "creates .venv and runs for minutes (make test runs this very suite)"),
    ("README.md", "8 GPUs and ImageNet"),
    ("docs/get-started.md", "creates .venv and runs for minutes (make test runs this very suite)"),
    ("docs/tutorials/convert.md", "needs the released files (hundreds of MB)"),
    ("docs/tutorials/data.md", "ImageNet-scale data on several machines"),
    ("docs/tutorials/data.md", "downloads a dataset from the Hugging Face Hub"),
    ("docs/tutorials/data.md", "needs a GPU"),
    ("docs/tutorials/distributed.md", "8 GPUs and ImageNet"),
    ("docs/tutorials/distributed.md", "a SLURM cluster"),
    ("docs/tutorials/distributed.md", "downloads the official weights (hundreds of MB)"),
    ("docs/tutorials/finetune.md", "ImageNet-scale data and a GPU"),
    ("docs/tutorials/init.md", "downloads the official weights (hundreds of MB)"),
    ("docs/tutorials/mindformers.md", "downloads the official weights (hundreds of MB)"),
    ("docs/tutorials/mindformers.md", "ImageNet-scale data and a GPU"),
    ("docs/tutorials/pretrain.md", "starts a server that runs until Ctrl+C"),
    ("docs/tutorials/pretrain.md", "ImageNet-scale data and a GPU"),
]

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(\w+)(.*?)-->\s*$")
_ATTR = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    code: str
    marker: str = ""
    attrs: dict = field(default_factory=dict)

    @property
    def rel(self) -> str:
        return self.path.relative_to(REPO).as_posix()

    @property
    def id(self) -> str:
        return f"{self.rel}:{self.line}"


def collect(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the ``docs-test`` marker right above it."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, lang = i, m.group(1), m.group(2).lower()
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):])
            i += 1
        i += 1
        before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        mark = _MARKER.match(before.strip())
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", mark.group(1) if mark else "",
                            dict(_ATTR.findall(mark.group(2))) if mark else {}))
    return blocks


ALL_BLOCKS = [b for p in DOC_FILES for b in collect(p)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.lang in RUN_LANGS or b.marker == "file"]


# ------------------------------------------------------------------------------------------ shell lines

def commands(block: Block) -> list[str]:
    """Shell command lines of a block: continuations joined; ``console`` blocks: the ``$ `` lines."""
    text = block.code
    if block.lang == "console":
        text = "\n".join(line[2:] for line in text.splitlines() if line.startswith("$ "))
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append(stripped)
    return out


def maekit_argv(line: str) -> list[str] | None:
    """The maekit arguments of a plain ``maekit ...`` / ``torchrun ... -m maekit ...`` line (comments
    dropped), or None when the line is something else or uses shell syntax."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if any(w in ("|", "&&", ";", ">", "&", "||") for w in words) or "$" in line:
        return None
    if words[:1] == ["maekit"]:
        return words[1:]
    if words[:1] in (["torchrun"], ["srun"]) and "maekit" in words:
        k = words.index("maekit")
        return words[k + 1:] if k == 0 or words[k - 1] == "-m" or words[0] == "srun" else None
    return None


def _extras() -> set[str]:
    import tomllib

    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def check_pip(line: str) -> bool:
    """``pip install 'maekit[X]'``: the extra exists (True when the line was a pip line)."""
    words = shlex.split(line, comments=True)
    if words[:2] != ["pip", "install"]:
        return False
    for w in words[2:]:
        m = re.fullmatch(r"maekit\[([\w,]+)\]", w)
        if m:
            assert set(m.group(1).split(",")) <= _extras(), f"{line}: no such extra in pyproject.toml"
    return True


def parse_only(argv: list[str]) -> None:
    """Parse and check a ``maekit`` command line as the command does, without running it (a marked block)."""
    from maekit.cli import COMMANDS, parse

    assert argv and argv[0] in COMMANDS, f"unknown command: maekit {' '.join(argv)}"
    try:
        parse(argv[0], argv[1:])  # every flag, its type and the config's checks
    except SystemExit as e:
        raise AssertionError(f"maekit {' '.join(argv)}: refused by its parser (exit {e.code})") from None


# ------------------------------------------------------------------------------------------ one page

def _seed_folder(folder: Path) -> None:
    """What every page's folder holds before its first block."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    shutil.copyfile(REPO / "src/maekit/app/static/samples/chelsea.jpg", folder / "cat.jpg")
    (folder / "my_images").mkdir()
    digits = load_digits()
    for i in range(24):
        arr = np.rint(digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(arr).resize((32, 32), Image.BICUBIC).convert("RGB").save(folder / f"my_images/{i:03d}.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """The state of one Markdown file's walk: its folder, its Python namespace, its processes."""

    def __init__(self, path: Path, root: Path, env: dict[str, str]):
        self.path, self.dir, self.env = path, root, env
        self.blocks = [b for b in RUN_BLOCKS if b.path == path]
        self.done: dict[int, BaseException | None] = {}
        self.namespace: dict = {"__name__": "__main__"}
        self.procs: list[subprocess.Popen] = []
        self.hub = None  # a LoopbackHub, started by the page's first hub block
        self.port = _free_port()  # the page's 7860: several suites may share this machine
        root.mkdir(parents=True)
        _seed_folder(root)

    def run_until(self, block: Block) -> None:
        for b in self.blocks:
            if b.line not in self.done:
                try:
                    self._run(b)
                    self.done[b.line] = None
                except BaseException as e:  # noqa: BLE001 - recorded, re-raised by its own test
                    self.done[b.line] = e
            if b is block:
                break
            if self.done[b.line] is not None:
                pytest.fail(f"an earlier block of this page failed: {b.id}: {self.done[b.line]!r}")
        if self.done[block.line] is not None:
            raise self.done[block.line]

    def _run(self, block: Block) -> None:
        if block.marker == "skip":
            self._check_marked(block)
            return
        with self._inside(hub=block.marker == "hub"):
            if block.marker == "file":
                (self.dir / block.attrs["path"]).write_text(block.code, encoding="utf-8")
            elif block.lang == "python":
                exec(compile(block.code.replace("7860", str(self.port)), block.id, "exec"), self.namespace)
            else:
                for line in commands(block):
                    self._shell(line.replace("7860", str(self.port)), block)

    def _check_marked(self, block: Block) -> None:
        if block.lang == "python":
            compile(block.code, block.id, "exec")
            return
        for line in commands(block):
            argv = maekit_argv(line)
            if argv is not None and "..." not in argv:
                parse_only(argv)

    def _shell(self, line: str, block: Block) -> None:
        if check_pip(line):
            return
        argv = maekit_argv(line)
        if argv is not None:
            from maekit.cli import main

            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
            assert rc in (0, None), f"{block.id}: `{line}` exited {rc}"
        elif line.endswith("&"):
            if line.startswith("maekit app") and "--port" not in line:
                line = f"{line[:-1].rstrip()} --port {self.port} &"
            self.procs.append(subprocess.Popen(["bash", "-c", line[:-1]], cwd=self.dir, env=self.env,
                                               start_new_session=True))
            if "maekit app" in line:
                self._wait_for_app()
        else:
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=self.dir, env=self.env,
                               capture_output=True, text=True, timeout=300)
            print(r.stdout, r.stderr)
            assert r.returncode == 0, f"{block.id}: `{line}` exited {r.returncode}:\n{r.stdout[-1500:]}{r.stderr[-3000:]}"

    def _wait_for_app(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.procs[-1].poll() is None, "maekit app exited at start-up"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/models", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("maekit app did not answer within 120 s")

    @contextlib.contextmanager
    def _inside(self, hub: bool = False):
        """cwd = the page's folder and the page's environment, for in-process blocks too; with
        ``hub``, the Hugging Face client online against the page's loopback Hub."""
        import huggingface_hub.constants as hc

        names = ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_TOKEN_PATH")
        old_cwd, old_env, old_hc = os.getcwd(), dict(os.environ), {n: getattr(hc, n) for n in names}
        env = dict(self.env)
        hc.HF_HUB_CACHE, hc.HF_HUB_OFFLINE = env["HF_HUB_CACHE"], True
        if hub:
            from hub_server import LoopbackHub

            if self.hub is None:
                self.hub = LoopbackHub().__enter__()
            env.pop("HF_HUB_OFFLINE"), env.pop("MAEKIT_OFFLINE")
            env.update(HF_ENDPOINT=self.hub.url, HF_TOKEN=self.hub.token, HF_HUB_CACHE=str(self.dir / "hub_cache"),
                       HF_HUB_DOWNLOAD_TIMEOUT="60")  # the loopback Hub answers: a starved process is not a silent Hub
            hc.ENDPOINT, hc.HF_HUB_OFFLINE, hc.HF_HUB_CACHE = self.hub.url, False, env["HF_HUB_CACHE"]
            hc.HUGGINGFACE_CO_URL_TEMPLATE = self.hub.url + "/{repo_id}/resolve/{revision}/{filename}"
            hc.HF_TOKEN_PATH = str(self.dir / "no-token-file")
        os.chdir(self.dir)
        os.environ.clear()
        os.environ.update(env)
        try:
            yield
        finally:
            os.chdir(old_cwd)
            os.environ.clear()
            os.environ.update(old_env)
            for n, v in old_hc.items():
                setattr(hc, n, v)

    def close(self) -> None:
        if self.hub is not None:
            self.hub.__exit__()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=20)


def _tiny_vitmae_hub(cache: Path) -> None:
    """``facebook/vit-mae-base`` in huggingface_hub's cache layout: the real repository's classes and
    file names (config.json, model.safetensors, preprocessor_config.json), a tiny configuration."""
    from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

    import torch

    torch.manual_seed(0)
    # The widths of mae_vit_tiny_patch16 (192, decoder 128): what a file does not state (head counts)
    # is fixed by the preset of that width, as the real repository's are by mae_vit_base_patch16's.
    config = ViTMAEConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768,
                          decoder_hidden_size=128, decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
                          decoder_intermediate_size=512, image_size=224, patch_size=16, norm_pix_loss=True)
    sha = "0" * 40
    repo = cache / "models--facebook--vit-mae-base"
    snap = repo / "snapshots" / sha
    ViTMAEForPreTraining(config).save_pretrained(snap)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    hf_cache = root / "hf_cache"
    _tiny_vitmae_hub(hf_cache)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "maekit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m maekit "$@"\n')
    (bin_dir / "maekit").chmod(0o755)
    # curl fails on an HTTP error status, as the examples expect (the default .curlrc place).
    (root / "curl").mkdir()
    (root / "curl" / ".curlrc").write_text("fail-with-body\n")
    env = python_env()
    env.update(CURL_HOME=str(root / "curl"), PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               MAEKIT_HOME=str(root / "maekit_cache"), MAEKIT_OFFLINE="1", HF_HUB_OFFLINE="1",
               HF_HUB_CACHE=str(hf_cache), HF_HOME=str(root / "hf_home"), MPLBACKEND="Agg",
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    opened: dict[Path, Page] = {}

    def page(path: Path) -> Page:
        if path not in opened:
            opened[path] = Page(path, root / path.relative_to(REPO).as_posix().replace("/", "__"), env)
        return opened[path]

    yield page
    for p in opened.values():
        p.close()


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.id for b in RUN_BLOCKS])
def test_example(block, pages):
    """The block runs as written (with its page's earlier blocks before it)."""
    pages(block.path).run_until(block)


# ------------------------------------------------------------------------------------------ the lists

def test_marked_blocks_are_listed_with_a_reason():
    markers = [b for b in ALL_BLOCKS if b.marker]
    for b in markers:
        assert b.marker in ("skip", "file", "hub"), f"{b.id}: unknown docs-test marker {b.marker!r}"
        if b.marker == "skip":
            assert b.attrs.get("reason", "").strip(), f"{b.id}: a skip marker needs reason=\"...\""
        elif b.marker == "file":
            assert b.attrs.get("path"), f"{b.id}: a file marker needs path=\"...\""
    found = Counter((b.rel, b.attrs["reason"]) for b in markers if b.marker == "skip")
    assert found == Counter(MARKED), "update MARKED in tests/test_docs.py: every skipped block is listed there"
    unmarked = [b.id for b in ALL_BLOCKS if b.lang in ("", "sh", "py", "python3", "bash-session")]
    assert not unmarked, f"fenced blocks without a runnable language tag (use python/bash/text): {unmarked}"


# ------------------------------------------------------------------------------------------ the site

def test_cli_reference_lists_every_flag_of_every_command():
    """Each flag ``maekit <command> -h`` prints is in the generated reference, in its command's section."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import docs_reference
    finally:
        sys.path.pop(0)
    from maekit.cli import COMMANDS

    text = docs_reference.cli_markdown()
    sections = dict(re.findall(r"^## maekit (\S+)\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert list(sections) == list(COMMANDS)
    for command in COMMANDS:
        r = subprocess.run([sys.executable, "-m", "maekit", command, "-h"], capture_output=True, text=True,
                           env=python_env(), timeout=120) if command == "pretrain" else None
        help_text = r.stdout if r else _help_in_process(command)
        printed = {flag.split()[0] for line in help_text.splitlines() if re.match(r"^  -\w", line)
                   for flag in re.split(r"\s{2,}", line.strip())[0].split(", ")} - {"-h", "--help"}
        listed = set(re.findall(r"`(--?[a-zA-Z][\w-]*)`", sections[command]))
        assert printed <= listed, f"maekit {command}: flags missing from the reference: {sorted(printed - listed)}"


def _help_in_process(command: str) -> str:
    import io

    from maekit.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([command, "-h"])
    return out.getvalue()


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: no broken link, no missing page or API reference."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the test extra")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=REPO, capture_output=True, text=True, env=python_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert (tmp_path / "site/reference/cli/index.html").exists()
