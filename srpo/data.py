"""Question/answer files: readers (JSONL, parquet, the release's parquet layout) and an epoch sampler.

Readers (``read_problems``)
---------------------------
One problem per JSONL line or parquet row. The question and answer are read from configurable
fields; a dotted name reads a nested field (``reward_model.ground_truth``). Without explicit field
names the first present of these is used:

- question: ``question``, ``problem``, ``prompt``;
- answer: ``answer``, ``reward_model.ground_truth``, ``ground_truth``.

That covers plain ``{"question", "answer"}`` files and the layout the release's data pipeline
writes (verl style): ``prompt`` is a chat message list ``[{"role": "user", "content": ...}]`` (the
question is the content of its last user message), the answer is under
``reward_model.ground_truth``, and ``data_source`` names the benchmark. The grader of a row
(``srpo.graders``) comes from the ``grader`` argument, else a ``grader`` field of the row, else
``srpo.graders.infer_grader(data_source, answer)``. A bad row raises ``ValueError`` naming the file,
the line (JSONL, 1-based) or row (parquet, 0-based), and the field.

Epochs (``EpochSampler``)
-------------------------
Training on a file goes through it epoch by epoch: each epoch a fresh permutation, cut into
``len // batch`` batches (the remainder is dropped, as the release's dataloader does: 400
problems at 32 per step give 12 steps per epoch, 24 steps in 2 epochs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srpo.graders import GRADERS, infer_grader
from srpo.tasks import Problem

__all__ = [
    "DatasetProblem",
    "QUESTION_FIELDS",
    "ANSWER_FIELDS",
    "read_problems",
    "EpochSampler",
]

QUESTION_FIELDS = ("question", "problem", "prompt")
ANSWER_FIELDS = ("answer", "reward_model.ground_truth", "ground_truth")
_ID_FIELDS = ("id", "uid", "extra_info.index")


@dataclass(frozen=True)
class DatasetProblem(Problem):
    """A problem read from a file.

    Attributes:
        data_source: the row's ``data_source`` (benchmark name), "" if none.
        grader: how answers are graded (``srpo.graders.GRADERS``).
        location: ``file:line`` (JSONL) or ``file:row`` (parquet), for messages and logs.
    """

    data_source: str = ""
    grader: str = "math"
    location: str = ""


_MISSING = object()


def _get(record: Any, dotted: str):
    value = record
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _plain(value):
    """numpy arrays / scalars (parquet) to Python lists / scalars."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _text(value) -> str | None:
    """A non-empty string from a field value (a chat list gives its last user message)."""
    value = _plain(value)
    if value is None or value is _MISSING:
        return None
    if isinstance(value, float):
        if np.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    if isinstance(value, list):
        if value and all(isinstance(m, dict) and "content" in m for m in value):
            users = [m for m in value if m.get("role", "user") == "user"] or value
            return _text(users[-1]["content"])
        if len(value) == 1:
            return _text(value[0])
        return None
    text = str(value).strip()
    return text or None


def _records(path: Path):
    """Yield ``(location, where, record)`` of each row of a JSONL or parquet file (``where`` is
    "line N" or "row N" for messages)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
                yield f"{path}:{line_number}", f"line {line_number}", record
    elif suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types
            raise ValueError(f"{path}: not a readable parquet file ({error})") from None
        for row, record in enumerate(frame.to_dict(orient="records")):
            yield f"{path}:row {row}", f"row {row}", record
    else:
        raise ValueError(f"dataset file must end in .jsonl, .json or .parquet, got {path.name!r}")


def _pick(record: dict, explicit: str | None, candidates: tuple[str, ...]):
    names = (explicit,) if explicit else candidates
    for name in names:
        value = _get(record, name)
        if value is not _MISSING:
            return name, value
    return None, _MISSING


def read_problems(
    path: str | Path,
    question_field: str | None = None,
    answer_field: str | None = None,
    grader: str | None = None,
    limit: int | None = None,
) -> list[DatasetProblem]:
    """Read problems from a local ``.jsonl`` / ``.json`` (one object per line) or ``.parquet`` file.

    Args:
        path: the file.
        question_field, answer_field: field names (dotted for nested fields); None: the first
            present of ``QUESTION_FIELDS`` / ``ANSWER_FIELDS``.
        grader: grader of every row (``srpo.graders.GRADERS``); None: the row's ``grader`` field,
            else inferred from ``data_source`` and the answer.
        limit: read at most this many problems (the first ones).

    Returns:
        Problems with ``uid`` = the row's id field if present, else ``"<file stem>:<row>"``.

    Raises:
        ValueError: the file does not exist or has an unknown suffix, a line is not JSON, a row
            lacks a non-empty question or answer or names an unknown grader (the message names
            the file, the line or row, and the field), or the file has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dataset path {str(path)!r} does not exist or is not a file")
    if grader is not None and grader not in GRADERS:
        raise ValueError(f"grader must be one of {GRADERS}; got {grader!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None; got {limit}")
    problems: list[DatasetProblem] = []
    for index, (location, where, record) in enumerate(_records(path)):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: {where} must be a JSON object, got {type(record).__name__}")
        for kind, explicit, candidates in (("question", question_field, QUESTION_FIELDS),
                                           ("answer", answer_field, ANSWER_FIELDS)):
            name, value = _pick(record, explicit, candidates)
            if name is None:
                tried = explicit or " / ".join(candidates)
                raise ValueError(f"{path}: {where} has no {kind} field ({tried!r}); name it with "
                                 f"the {kind}-field option (--{kind}-field)")
            text = _text(value)
            if text is None:
                raise ValueError(f"{path}: {where}: field {name!r} ({kind}) is empty or not text")
            if kind == "question":
                question = text
            else:
                answer, answer_name = text, name
        data_source = _text(record.get("data_source")) or ""
        row_grader = grader or _text(record.get("grader")) or infer_grader(data_source, answer)
        if row_grader not in GRADERS:
            raise ValueError(f"{path}: {where}: field 'grader' is {row_grader!r}; expected one of "
                             f"{GRADERS}")
        if row_grader == "code":  # the answer holds the tests: check them now, not mid-run
            from srpo.code.evaluation import problem_from_reference

            try:
                problem_from_reference(answer)
            except ValueError as error:
                raise ValueError(f"{path}: {where}: field {answer_name!r} (the tests): {error}"
                                 ) from None
        uid = None
        for name in _ID_FIELDS:
            value = _get(record, name)
            if value is not _MISSING and _text(value) is not None:
                uid = _text(value)
                break
        problems.append(DatasetProblem(
            uid=uid if uid is not None else f"{path.stem}:{index}", question=question,
            answer=answer, data_source=data_source, grader=row_grader, location=location,
        ))
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ValueError(f"{path}: no rows found")
    return problems


def check_batch_fits(n_problems: int, prompts_per_step: int, source: str = "the training set") -> None:
    """Raise ValueError (one line) unless ``n_problems`` fill at least one step's prompts."""
    if n_problems < prompts_per_step:
        raise ValueError(f"prompts_per_step must be <= the {n_problems} training problems of "
                         f"{source} (one step draws {prompts_per_step} distinct problems); "
                         "lower --prompts-per-step or use a larger file")


class EpochSampler:
    """Batches of item indices, epoch after epoch (a fresh permutation per epoch, remainder dropped).

    Args:
        n_items: items in the training set (>= batch_size).
        batch_size: items per batch.
        rng: numpy Generator that draws each epoch's permutation.

    The state (``state_dict`` / ``load_state_dict``) holds the epoch, the position and the current
    permutation, so a resumed run continues the same stream.
    """

    def __init__(self, n_items: int, batch_size: int, rng: np.random.Generator) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        check_batch_fits(n_items, batch_size)
        self.n_items, self.batch_size, self.rng = n_items, batch_size, rng
        self.epoch, self.position, self.order = 0, 0, None

    @property
    def steps_per_epoch(self) -> int:
        return self.n_items // self.batch_size

    def next_batch(self) -> list[int]:
        if self.order is None or self.position + self.batch_size > self.n_items:
            if self.order is not None:
                self.epoch += 1
            self.order = self.rng.permutation(self.n_items)
            self.position = 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return [int(i) for i in batch]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position,
                "order": None if self.order is None else self.order.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.order = None if state["order"] is None else np.asarray(state["order"], dtype=np.int64)
