"""The "Faults" section of the operations guide shows only fota-relay options that exist."""

import shlex
from pathlib import Path

from sim.relay import build_parser, faults_from_args

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_every_fota_relay_line_in_the_guide_parses():
    text = DOC.read_text()
    section = text[text.index("## Faults"):].split("\n## ", 1)[0]
    lines = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("fota-relay ")]
    assert len(lines) >= 3
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        faults_from_args(args, "up"), faults_from_args(args, "down")
    options = {a for ac in build_parser()._actions for a in ac.option_strings}
    for word in section.replace("`", " ").split():
        if (word.startswith("--") and word[2:3].isalpha()
                and not word.startswith(("--up-X", "--down-X", "--X"))):
            others = {"--timeout", "--wait", "--watch",  # cc
                      "--ack-timeout", "--seq",  # fota-sim
                      "--device"}  # bench/lossy.py
            assert word.rstrip(",.)") in options | others, word
