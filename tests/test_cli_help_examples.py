"""Every sub-command's ``--help`` ends with example command lines, printed as written (not re-wrapped)."""

from __future__ import annotations

import pytest

from experiments.cli import COMMANDS, main


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [c.replace("_", "-") if c == "prepare_videos" else c for c in COMMANDS])
def test_every_subcommand_help_shows_two_or_more_example_command_lines(capsys, command):
    text = help_text(capsys, command)
    assert "examples:" in text, f"mmir {command} --help has no examples"
    examples = text.split("examples:", 1)[1].splitlines()
    lines = [line for line in examples if line.strip().startswith(f"mmir {command}")]
    assert len(lines) >= 2, text
    assert all(line.startswith("  mmir ") for line in lines)  # one command per line, indented as written


@pytest.mark.parametrize("argv", [("snapshot", "inspect"), ("snapshot", "validate"), ("snapshot", "synth")])
def test_snapshot_actions_show_the_examples_too(capsys, argv):
    assert "  mmir snapshot validate " in help_text(capsys, *argv)


def test_help_descriptions_are_still_wrapped_to_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = help_text(capsys, "train")
    description = text.split("\n\n")[1]
    assert "output_dir/name" in description and all(len(line) <= 80 for line in description.splitlines())


def test_sweep_and_report_help_still_show_option_defaults(capsys):
    assert "(default: 3)" in help_text(capsys, "sweep")
    assert "(default: top1)" in help_text(capsys, "report")
