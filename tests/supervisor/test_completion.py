"""`memwarden completion bash|zsh`: scripts generated from the parser, run in the shells."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from supervisor import cli, completion


def _script(shell: str) -> str:
    r = subprocess.run([sys.executable, "-m", "supervisor", "completion", shell],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("completion") / "memwarden.bash"
    path.write_text(_script("bash"))
    return str(path)


def complete(script: str, line: str) -> list[str]:
    """What bash offers for the last word of `line` (empty: a new word)."""
    words = line.split(" ")
    code = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
            f"COMP_CWORD={len(words) - 1}\n_memwarden\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(("line", "expected"), [
    ("memwarden ", {"run", "analyze", "status", "top", "stop", "completion", "--version"}),
    ("memwarden st", {"status", "stop"}),
    ("memwarden run --rest", {"--restart", "--restart-budget", "--restart-window"}),
    ("memwarden run --restart ", {"never", "on-failure", "always"}),
    ("memwarden run --log-format ", {"text", "json"}),
    ("memwarden run --snapshot-f", {"--snapshot-file-size", "--snapshot-files"}),
    ("memwarden run --high 200MB --on-baseline-high e", {"exit"}),
    ("memwarden analyze --format ", {"text", "json", "html"}),
    ("memwarden analyze --fail-on l", {"likely"}),
    ("memwarden status --", {"--json", "--check", "--control", "--help"}),
    ("memwarden status --check ", {"ready", "live"}),
    ("memwarden top --i", {"--interval"}),
    ("memwarden completion ", {"bash", "zsh"}),
])
def test_bash_offers_what_the_parser_takes(bash_script: str, line: str,
                                           expected: set[str]) -> None:
    offered = set(complete(bash_script, line))
    assert expected <= offered, offered


def test_bash_completes_files_and_the_worker_command(bash_script: str, tmp_path,
                                                     monkeypatch) -> None:
    (tmp_path / "m.toml").touch()
    monkeypatch.chdir(tmp_path)
    assert complete(bash_script, "memwarden run --config m") == ["m.toml"]
    assert "bash" in complete(bash_script, "memwarden run --high 1GB -- bas")
    assert complete(bash_script, "memwarden run -- python3 m.t") == ["m.toml"]


def test_every_option_of_the_parser_is_in_both_scripts() -> None:
    parser = cli.build_parser()
    options = {n for c in completion.commands(parser) for o in c.options for n in o.names}
    assert {"--snapshot-max-age", "--log-format", "--metrics", "--fail-on"} <= options
    bash, zsh = completion.bash(parser), completion.zsh(parser)
    for name in options:
        assert name in bash and name in zsh, name


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_reads_the_script(tmp_path) -> None:
    path = tmp_path / "_memwarden"
    path.write_text(_script("zsh"))
    r = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
