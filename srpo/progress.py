"""Progress reporting: a tqdm bar on a terminal, plain throttled lines otherwise (logs, nohup, CI)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """A progress counter for a phase of ``total`` units.

    On a terminal it is a tqdm bar; otherwise it prints ``desc: done/total note`` at most every
    ``every_s`` seconds and when the phase completes, so that a log shows progress too.
    """

    def __init__(self, total: int, desc: str, every_s: float = 30.0, stream=None) -> None:
        from tqdm.auto import tqdm

        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.bar = tqdm(total=total, desc=desc, disable=not self.tty, file=self.stream)
        self.total, self.done, self.desc = total, 0, desc
        self.every_s, self.last = every_s, time.time()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.bar.update(n)
        if note:
            self.bar.set_postfix_str(note)
        now = time.time()
        if not self.tty and (now - self.last >= self.every_s or self.done >= self.total):
            self.last = now
            print(f"{self.desc}: {self.done}/{self.total}{' ' + note if note else ''}", flush=True)

    def write(self, message: str) -> None:
        (self.bar.write if self.tty else print)(message)

    def close(self) -> None:
        self.bar.close()
