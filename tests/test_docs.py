"""The reading example in docs/dataset-format.md runs, with plain h5py, on a real v1 file."""

import re
from pathlib import Path

from tests.conftest import write_tiny_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "dataset-format.md"


def test_plain_h5py_reading_example_runs(tmp_path, capsys):
    path = tmp_path / "d.h5"
    write_tiny_dataset(path, n_frames=16)
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert "import render" not in code and "from render" not in code
    exec(code.replace("data/dof2-teapot-32px-seed0.h5", str(path)), {})
    assert "teapot.f0" in capsys.readouterr().out


def test_every_option_the_docs_use_exists(monkeypatch):
    """Each `--option` on a command line in README.md or docs/*.md is one the command accepts (with a
    --method-file, its options too: the command is parsed from the repository root)."""
    import shlex
    import tomllib
    from importlib import import_module

    root = DOC.parents[1]
    monkeypatch.chdir(root)
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {}
    for name, target in scripts.items():
        module, attr = target.split(":")
        cmd = getattr(import_module(module), attr)
        commands[name] = {opt for p in cmd.params for opt in p.opts + p.secondary_opts} | {"--help"}
    checked = 0
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for lang, block in re.findall(r"```(\w*)\n(.*?)```", doc.read_text(), re.S):  # every fence, shell ones read
            if lang not in ("", "bash"):
                continue
            for line in block.splitlines():
                for name, options in commands.items():
                    # The command's own part of the line: up to a pipe, a comment or another command.
                    m = re.search(rf"(?:^|[\s(/]){re.escape(name)}(?:\)|\s)(.*)", line)
                    if not m:
                        continue
                    own = re.split(r"\||#|&&|;", m.group(1))[0]
                    used = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", own))
                    if "--method-file" in used:  # the file's Config options exist once it is loaded
                        cmd = getattr(import_module(scripts[name].split(":")[0]), scripts[name].split(":")[1])
                        ctx = cmd.make_context(name, shlex.split(own), resilient_parsing=True)
                        options = options | {o for p in cmd.get_params(ctx) for o in p.opts + p.secondary_opts}
                    assert used <= options, f"{doc.name}: {line.strip()!r} uses {sorted(used - options)}"
                    checked += 1
    assert checked >= 20  # the docs really were read
