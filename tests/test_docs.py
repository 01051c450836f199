"""The hex examples in docs/protocol.md are exactly what the contract produces today."""

from pathlib import Path

from proto import examples

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_protocol_examples_match_the_code():
    text = DOC.read_text()
    begin, end = "<!-- examples:begin -->\n", "<!-- examples:end -->"
    embedded = text[text.index(begin) + len(begin):text.index(end)]
    assert embedded == examples.render(), "regenerate: python -m proto.examples (docs/protocol.md)"
