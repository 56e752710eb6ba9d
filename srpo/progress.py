"""Progress reporting: a tqdm bar on a terminal, plain throttled lines otherwise (logs, nohup, CI)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "warm_start_progress", "announce_warm_start"]


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


def warm_start_progress():
    """A ``progress(phase, done, total)`` callback for ``srpo.warmstart.warm_start``: one bar (or
    plain lines) per phase (train, evaluate, save)."""
    state = {"bar": None, "phase": None, "done": 0}

    def callback(phase: str, done: int, total: int) -> None:
        if state["phase"] != phase:
            if state["bar"] is not None:
                state["bar"].close()
            state["phase"] = phase
            state["bar"] = Progress(total, f"warm start: {phase}", every_s=15.0)
            state["done"] = 0
        if done > state["done"]:
            state["bar"].update(done - state["done"])
            state["done"] = done
        if done >= total and state["bar"] is not None:
            state["bar"].close()
            state["bar"], state["phase"] = None, None

    return callback


def announce_warm_start(config) -> None:
    """Say where the tiny model of ``config`` (a ``srpo.config.TrainConfig``) is cached, whether
    it must be trained first, and how to move the cache. Silent for a ``--model`` run."""
    from srpo.trainer import warm_start_config
    from srpo.warmstart import is_cached, warm_start_path

    ws = warm_start_config(config)
    if ws is None:
        return
    path = warm_start_path(ws, config.cache_dir)
    if is_cached(ws, config.cache_dir):
        print(f"warm start: using the cached tiny model in {path}", flush=True)
    else:
        print(f"warm start: training the tiny model once ({ws.steps} steps, then an evaluation); "
              f"it is cached in {path} (move the cache with --cache-dir DIR or "
              "CREDIT_RESETS_CACHE=DIR)", flush=True)
