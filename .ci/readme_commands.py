"""The commands of README.md's "Set up" section: the README's text is the source CI runs.

`python3 .ci/readme_commands.py quickstart` prints the newcomer's command, `... tests` the test command, and
`... quickstart --short` the newcomer's command with the quickstart's documented short form.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
#: the short form of the quickstart that README.md documents and CI runs in a fresh environment
SHORT_QUICKSTART = "ftsdk quickstart --max-steps 5 --limit 12"


def setup_commands(readme: str | None = None) -> dict[str, str]:
    """The two commands of the "Set up" section: {"quickstart": ..., "tests": ...}."""
    text = README.read_text(encoding="utf-8") if readme is None else readme
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    if len(commands) != 2 or not commands[0].endswith(" && ftsdk quickstart"):
        raise SystemExit("README.md's Set up section must hold two bash blocks: the quickstart, then the tests")
    return {"quickstart": commands[0], "tests": commands[1]}


def short_quickstart(command: str) -> str:
    """The newcomer's command with the quickstart replaced by its short form."""
    return command.removesuffix("ftsdk quickstart") + SHORT_QUICKSTART


if __name__ == "__main__":
    name = sys.argv[1]
    command = setup_commands()[name]
    print(short_quickstart(command) if sys.argv[2:] == ["--short"] else command)
