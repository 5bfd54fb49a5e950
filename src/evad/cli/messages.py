"""How the command line reports warnings: one ``evad: warning: ...`` line each."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Print the warnings raised inside as one ``evad: warning: ...`` line each (once per message),
    instead of Python's two lines ending in a source line; also when an error ends the block.
    Python's filters still apply, so library deprecation warnings stay hidden."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for message in dict.fromkeys(str(w.message) for w in caught):
                print(f"evad: warning: {message}", file=sys.stderr)
