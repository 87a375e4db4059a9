"""Progress of slow steps (counting, calibration, report sections) on stderr, never silent for
long: tqdm's bar on a terminal, and one line per finished step elsewhere (a log file, CI, a
pipe), where a bar's carriage returns would be unreadable."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO, TypeVar

T = TypeVar("T")


def track(items: Sequence[T], desc: str, unit: str = "step", *, show: bool | None = None,
          label: Callable[[T], str] | None = None, stream: TextIO | None = None,
          terminal: bool | None = None) -> Iterator[T]:
    """Yield `items`, reporting each finished one. `show=False` reports nothing; `terminal`
    (default: whether `stream` is one) picks the bar or the lines. The bar redraws on every
    step (mininterval 0), so it always reaches its total before it is cleared, however fast
    the steps are."""
    stream = stream or sys.stderr
    if show is False:
        yield from items
        return
    if stream.isatty() if terminal is None else terminal:
        from tqdm import tqdm  # lazy: an optional or rarely used dependency, loaded on use

        yield from tqdm(items, desc=desc, unit=unit, leave=False, file=stream, mininterval=0, miniters=1)
        return
    total = len(items)
    for i, item in enumerate(items, 1):
        yield item
        print(f"{desc}: {i}/{total}" + (f" {label(item)}" if label else ""), file=stream, flush=True)
