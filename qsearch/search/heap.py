"""Keep full garbage collections short while trials run."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects that exist on entry out of cyclic garbage collection until exit.

    torch and Optuna create a few hundred thousand long-lived objects at
    import, and every full collection scans them all. Measured on a 2-core
    x86 machine with Python 3.11, those collections took 120 to 200 ms, three
    times in a 24-trial quick study. `gc.freeze` moves the objects to a
    permanent generation that collections skip, and `gc.unfreeze` on exit
    returns them, so nothing stays uncollectable afterwards.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
