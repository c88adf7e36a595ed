"""The README against the code it describes: its options table lists every option of
`memwarden run`, and nothing else, so that the two cannot drift apart."""

from __future__ import annotations

import argparse
import re

from supervisor.cli import build_parser
from tests.conftest import ROOT

#: What argparse adds to every command by itself.
IMPLIED = {"--help"}


def _run_options() -> set[str]:
    """Every long option of `memwarden run`, from the parser `memwarden` itself uses."""
    parser = build_parser(analyze_arguments=False)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = commands.choices["run"]
    return {o for a in run._actions for o in a.option_strings if o.startswith("--")} - IMPLIED


def _table_options() -> list[str]:
    """The options named in the first column of the README's table of `run` options."""
    text = (ROOT / "README.md").read_text()
    start = text.index("| option | default | meaning |")
    rows = text[start:text.index("\n\n", start)].splitlines()[2:]
    return [o for row in rows for o in re.findall(r"`(--[a-z0-9-]+)`", row.split("|")[1])]


def test_the_readme_lists_every_option_of_run_once() -> None:
    listed = _table_options()
    options = _run_options()
    assert sorted(options - set(listed)) == [], "options of `memwarden run` not in the README"
    assert sorted(set(listed) - options) == [], "README options `memwarden run` does not take"
    assert len(listed) == len(set(listed)), "an option listed twice in the README"
