"""``python -m cc``: the same program as the ``cc`` and ``fota-cc`` scripts."""

from cc.main import cli

cli()
