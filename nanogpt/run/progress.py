"""Progress for long loops: a redrawn bar on a terminal, a plain line every few seconds anywhere else.

A tqdm bar writing into a file or a pipe stores every redraw (some 300 of them in 37 KB for a 40-second run);
off a terminal, `progress` prints one line every `every_s` seconds instead, plus one at the end.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

LINE_EVERY_S = 10.0


class LineProgress:
    """tqdm's update / set_postfix / close, as a line every `every_s` seconds on `stream`."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", every_s: float = LINE_EVERY_S,
                 stream=None, clock=time.monotonic):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.every_s, self.stream, self.clock = every_s, stream or sys.stderr, clock
        self.postfix: dict = {}
        self.started = self.last = clock()
        self.lines = 0
        self.closed = False

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values) -> None:
        self.postfix = {**(ordered_dict or {}), **values}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every_s:
            self._line()

    def _line(self) -> None:
        self.last = self.clock()
        post = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s, {self.last - self.started:.0f} s"
              + (f" ({post})" if post else ""), file=self.stream, flush=True)
        self.lines += 1

    def close(self) -> None:
        if not self.closed and self.n:
            self._line()  # the last state, always
        self.closed = True


def progress(total: int, initial: int = 0, desc: str = "", unit: str = "it", disable: bool = False, stream=None):
    """A tqdm bar when `stream` (stderr by default) is a terminal, else a LineProgress; nothing when disabled."""
    stream = stream or sys.stderr
    if disable:
        return tqdm(total=total, initial=initial, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return LineProgress(total, initial, desc, unit, stream=stream)
