"""Input checks every entry point shares, each answering in one line of user words.

* :func:`out_dir_problem` -- can ``--out`` be written? Checked while the arguments are parsed,
  before any model loads (an unwritable folder must not cost a warm start, then a traceback).
* :func:`whole_number_problem` -- ``--steps -3`` -> "--steps must be a whole number >= 0; got -3".
* :func:`user_words` -- a configuration error in the package's wording ("must be an integer >= 0
  or None") in the words of a command line ("must be a whole number >= 0": on the command line,
  None is an omitted flag).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path


def out_dir_problem(path: str | Path, flag: str = "--out") -> str | None:
    """Why ``path`` cannot be an output folder (one line), or None when it can.

    The folder is created if missing (with its parents) and a probe file is written and removed,
    so a read-only file system, a missing permission or a file in the way are all found here.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        return f"{flag} {str(path)!r} is a file; expected a directory"
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            return f"{flag} {str(path)!r}: {str(parent)!r} is a file, not a directory"
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as err:
        return f"{flag} {str(path)!r} cannot be written ({err.strerror or err}); choose another"
    return None


def whole_number_problem(flag: str, value, minimum: int) -> str | None:
    """``"--steps must be a whole number >= 0; got -3"``, or None when ``value`` is fine (None,
    an omitted flag, is fine)."""
    if value is None or value >= minimum:
        return None
    return f"{flag} must be a whole number >= {minimum}; got {value}"


def user_words(message: str, flags: dict[str, str] | None = None) -> str:
    """A TrainConfig message in command-line words: no 'integer', no 'or None', and field names
    written as their flags (``flags``: field -> flag): the field the message starts with, and any
    other field name with an underscore (``prompts_per_step``; a plain word like ``steps`` may be
    prose)."""
    message = re.sub(
        r"must be an integer >= (-?\d+)(?: or None)?", r"must be a whole number >= \1", message
    )
    message = re.sub(r"must be (> 0|>= 0|in \S+ \S+) or None", r"must be \1", message)
    flags = flags or {}
    first = message.split(" ", 1)[0]
    if first in flags:
        message = flags[first] + message[len(first) :]
    for field, flag in sorted(flags.items(), key=lambda kv: -len(kv[0])):
        if "_" in field:
            message = re.sub(rf"(?<![\w-]){re.escape(field)}(?![\w-])", flag, message)
    return message
