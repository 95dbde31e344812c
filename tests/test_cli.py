"""The ``mmir`` command: help, study output, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "study" in out and "demo" in out


def test_study_prints_table(capsys):
    rc = main(["study", "--agent", "random,oracle", "--episodes", "200", "--feature-dim", "32", "--domain", "source"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "precision" in out and "oracle" in out and "random" in out


def test_study_unknown_agent_is_a_clean_error(capsys):
    rc = main(["study", "--agent", "bogus", "--episodes", "10", "--feature-dim", "32"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown agent" in err and "bogus" in err and "Traceback" not in err


def test_console_script_bad_argument_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "study", "--n-c", "1", "--episodes", "5", "--feature-dim", "32"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "n_c must be >= 2" in proc.stderr and "Traceback" not in proc.stderr
