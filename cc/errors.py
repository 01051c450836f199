"""One error type for everything the operator can fix: printed as one line, exit status 2."""


class CcError(Exception):
    """A failure with a message fit for the operator (no traceback)."""


class GatewayError(CcError):
    """The gateway answered with an error code; its diagnostic payload is the message."""

    def __init__(self, code: str, diagnostic: str, path: str) -> None:
        self.code = code
        self.diagnostic = diagnostic
        self.path = path
        detail = f": {diagnostic}" if diagnostic else ""
        super().__init__(f"gateway answered {code} to {path}{detail}")
