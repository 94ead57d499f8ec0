"""Every command's --help shows each option with its sentence and its default, brackets intact."""

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from monge.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands.items())


def _flat(text: str) -> str:
    """The help screen without its box drawing, whitespace collapsed (wrapped lines rejoined)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("name,command", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_help_shows_every_option_with_sentence_and_default(name, command):
    res = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert res.exit_code == 0, res.output
    shown = _flat(res.output)
    assert "``" not in shown, "literal double backticks in the help"
    for param in command.params:
        if param.name == "help":
            continue
        assert param.help, f"monge {name}: {param.opts} has no description"
        assert "[" not in param.help.replace("\\[", ""), f"rich markup would swallow [...] in {param.help!r}"
        if isinstance(param, click.Option):
            assert f"{_flat(param.help)} [default:" in shown, \
                f"monge {name}: {param.opts} should show {param.help!r} then its default:\n{res.output}"
        else:
            assert _flat(param.help) in shown, f"monge {name}: argument {param.name} lost its help text"


def test_square_brackets_survive():
    res = CliRunner().invoke(app, ["sample", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert "[default: (RUN/samples.npy)]" in _flat(res.output)
