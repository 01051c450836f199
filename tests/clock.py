"""A clock a test sets by hand (``clock.t += 61``): the gateway's parts take ``clock``, a
callable returning seconds, so tests move time instead of waiting for it."""


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
