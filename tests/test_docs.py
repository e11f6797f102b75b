"""Every command in the documentation works: the shell commands of the ```bash blocks of README.md and docs/*.md
are extracted; each `python -m X` / `python path.py` / `torchrun ... -m X` must name an existing entry point whose
`--help` lists every `--flag` the command passes; `scripts.train` commands must compose (experiment registered,
every override key valid); `make T` must name a Makefile target. Commands needing real checkpoints are checked this
way, not run."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_PROGRAMS = {"pip", "git", "cd", "ls", "mkdir", "cp", "mv", "rm", "export", "huggingface-cli", "hf", "cat",
                 "tensorboard", "nvidia-smi", "ffmpeg", "echo", "source", ".", "ln", "tree", "du", "find", "unzip",
                 "wget", "curl", "tail", "head", "grep", "python3", "bash", "sudo", "apt-get"}  # fmt: skip


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```(?:bash|shell|sh)\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def commands_of(block: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", block)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.strip().startswith("#") else ""
        for part in re.split(r"\s*(?:&&|;|\|\|)\s*", line):
            if part.strip():
                out.append(part.strip())
    return out


def all_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        if doc.is_file():
            for block in bash_blocks(doc):
                found += [(doc.name, cmd) for cmd in commands_of(block)]
    return found


PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")  # experiment=NAME in usage lines


def parse_command(cmd: str) -> tuple[str, str, list[str]] | None:
    """-> (kind, target, args): kind "module", "script" or "make"; None for commands we do not check."""
    # Optional parts of usage lines ([key.path=value ...]) hold a space or "..."; list values ([64,64]) do not.
    cmd = re.sub(r"\[[^\]]*(\.\.\.|\s)[^\]]*\]", "", cmd)
    words = shlex.split(cmd)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return None
    prog = Path(words[0]).name
    if prog == "make":
        return ("make", words[1] if len(words) > 1 else "", [])
    if prog in ("python", "torchrun") or prog.startswith("python3."):
        rest = words[1:]
        if prog == "torchrun":  # skip torchrun's own options
            while rest and rest[0].startswith("--") and rest[0] != "-m":
                rest = rest[1:] if "=" in rest[0] else rest[2:]
        if rest and rest[0] == "-m":
            return ("module", rest[1], rest[2:])
        if rest and rest[0].endswith(".py"):
            return ("script", rest[0], rest[1:])
        return None
    if prog in SKIP_PROGRAMS:
        return None
    raise AssertionError(f"unrecognised command in the docs (add it to SKIP_PROGRAMS if it is not ours): {cmd}")


@functools.cache
def help_flags(kind: str, target: str) -> frozenset[str]:
    argv = [sys.executable, "-m", target] if kind == "module" else [sys.executable, target]
    r = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{target} --help failed:\n{r.stderr[-2000:]}"
    return frozenset(re.findall(r"--[A-Za-z0-9_][A-Za-z0-9_-]*", r.stdout))


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


COMMANDS = all_commands()


def test_docs_have_commands():
    assert (ROOT / "README.md").is_file()
    docs = {name for name, _ in COMMANDS}
    assert {"README.md", "guide.md"} <= docs, docs
    assert any("make demo" in cmd for _, cmd in COMMANDS)


def _check_train(args: list[str]) -> None:
    from cosmos_predict2.configs.compose import compose_config

    config = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    assert config and (ROOT / config).is_file(), f"scripts.train needs an existing --config=FILE, got {args}"
    opts = [a for a in args if not a.startswith("--")]
    assert any(o.startswith("experiment=") for o in opts), f"no experiment= in {args}"
    if any(PLACEHOLDER.match(o.split("=", 1)[1]) for o in opts if "=" in o):
        return  # a usage line with placeholders (experiment=NAME): flags checked, composition not
    compose_config(str(ROOT / config), opts)  # raises ConfigError for unknown experiments or keys


@pytest.mark.parametrize("doc,cmd", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_doc_command(doc: str, cmd: str, monkeypatch):
    parsed = parse_command(cmd)
    if parsed is None:
        return
    kind, target, args = parsed
    if kind == "make":
        assert target in makefile_targets(), f"{doc}: `{cmd}`: no Makefile target {target!r}"
        return
    if kind == "module":
        module_path = ROOT / (target.replace(".", "/") + ".py")
        assert module_path.is_file() or (ROOT / target.replace(".", "/") / "__main__.py").is_file(), \
            f"{doc}: `{cmd}`: no module {target}"  # fmt: skip
    else:
        assert (ROOT / target).is_file(), f"{doc}: `{cmd}`: no script {target}"
    flags = help_flags(kind, target)
    passed = {a.split("=", 1)[0] for a in args if a.startswith("--") and a != "--"}
    unknown = sorted(passed - flags)
    assert not unknown, f"{doc}: `{cmd}`: {target} does not accept {unknown}"
    if target in ("scripts.train", "scripts/train.py"):
        monkeypatch.chdir(ROOT)
        _check_train(args)
