"""Progress bars through tqdm, drawn only when someone is watching.

Benchmarks and replay used to write carriage-return status lines, which fill redirected logs
and CI output with one line per update. :func:`progress` returns a tqdm bar on stderr that
is disabled (no output at all, almost no cost) unless stderr is a terminal, so the same code
prints a live bar in a shell and nothing in ``> log 2>&1``.

>>> import io
>>> with progress(total=3, desc="demo", file=io.StringIO()) as bar:   # not a terminal
...     for _ in range(3):
...         bar.update(1)
>>> bar.disable, bar.n
(True, 0)
>>> step = progress_callback(file=io.StringIO(), enabled=True)   # forced on, for the example
>>> for done in (10, 20):
...     step(done, 20, "report/provided")
>>> step.bars["report/provided"].n
20
"""
from __future__ import annotations

import sys
from typing import IO, Callable, Iterable

from tqdm import tqdm


def is_terminal(stream: IO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # closed or a stream without a file behind it
        return False


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
             unit: str = "it", file: IO | None = None, enabled: bool | None = None,
             **kwargs) -> tqdm:
    """A tqdm bar on ``file`` (stderr), on only when that is a terminal (or ``enabled``).

    Use it as tqdm: wrap an iterable, or ``update(n)`` / ``set_postfix(...)`` by hand.
    """
    file = sys.stderr if file is None else file
    on = is_terminal(file) if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=file, disable=not on,
                dynamic_ncols=True, leave=True, **kwargs)


def progress_callback(**kwargs) -> Callable[..., None]:
    """A ``(done, total, label, *ignored)`` callback for loops that report progress that
    way (``bench detect``): one bar per label, closed when ``done`` reaches ``total``."""
    bars: dict[str, tqdm] = {}

    def step(done: int, total: int, label: str = "", *_ignored) -> None:
        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = progress(total=total, desc=label, unit="ev", **kwargs)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    step.bars = bars
    return step
