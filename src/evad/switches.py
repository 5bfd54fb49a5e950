"""Context-local switches between interchangeable implementations (same values, different cost).

Several ops have two roads that compute the same result, one chosen by default per device; FLOP
counting, export and tests pin one of them for a block of code. `MethodSwitch` is that pin.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator, Sequence


class MethodSwitch:
    """A named choice among `methods`, unset (None: the caller's default) unless forced in a block.

    Args:
        name: Name of the switch (for the context variable and error messages).
        methods: The allowed method names.
    """

    def __init__(self, name: str, methods: Sequence[str]) -> None:
        self.methods = tuple(methods)
        self._forced: contextvars.ContextVar[str | None] = contextvars.ContextVar(name, default=None)
        # Blocks inside `force` right now, in any thread. While there are none, `get` answers
        # without reading the context variable: torch.compile cannot trace that read (it breaks
        # the graph there) but reads this plain count as a constant.
        self._open = 0
        self._lock = threading.Lock()

    def get(self) -> str | None:
        """The method forced in the current context, or None."""
        return self._forced.get() if self._open else None

    @contextlib.contextmanager
    def force(self, method: str) -> Iterator[None]:
        """Use `method` inside the block (ValueError for a name not in `methods`)."""
        if method not in self.methods:
            allowed = " or ".join(repr(m) for m in self.methods)
            raise ValueError(f"method must be {allowed}, got {method!r}")
        with self._lock:
            self._open += 1
        token = self._forced.set(method)
        try:
            yield
        finally:
            self._forced.reset(token)
            with self._lock:
                self._open -= 1
