"""The commands a `sluice` executable offers, read from its `--help` as a user reads them."""

from __future__ import annotations

import re
import subprocess


def cli_commands(sluice: list[str], **run) -> set[str]:
    """Run `sluice --help` (`sluice` as argv: a console script, or python -m sluice.cli) and
    return the commands of its usage line (`{up,edge,...}`). Raises if it does not exit 0."""
    result = subprocess.run([*sluice, "--help"], capture_output=True, text=True, timeout=120, **run)
    assert result.returncode == 0, result.stdout + result.stderr
    choices = re.search(r"\{([\w,-]+)\}", result.stdout)
    assert choices, f"no commands in the usage of `sluice --help`:\n{result.stdout}"
    return set(choices.group(1).split(","))
