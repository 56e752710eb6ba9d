"""Answer graders by benchmark type: math, multiple-choice letter, yes/no, exact and substring match.

Each grader maps ``(reference answer, response text) -> 1.0 | 0.0``; the response is the whole
generated chain, and the prediction is read from its last complete ``\\boxed{...}`` (what the
rollout prompt asks for), with the fallbacks below when there is none.

- ``math``: the content of the last ``\\boxed{}`` against the reference by mathematical
  equivalence (``math_verify``: parsing and answer normalization). No box: wrong.
- ``mc``: a choice letter A-J. From the last box (``B``, ``(B)``, ``\\text{B}``, ``B. text``,
  ``b``); else the *last* "answer is B" / "answer: (B)" / "final: B" (an upper-case letter, so
  the article in "the answer is a fridge" is not a choice); else the last of "option B",
  "choice B", a parenthesised ``(B)`` / ``(b)``, a ``B)`` / ``b)`` after a space or at a line
  start, or a line that is only the letter (``b``, ``B.``). The reference may be ``B``, ``(B)``
  or ``B) text``.
- ``yesno``: the last box if it says yes/no/true/false, else the last standalone yes/no/true/false
  word of the response (StrategyQA's rule); references yes/no/true/false/1/0.
- ``exact``: the last box (else the last non-empty line) equals the reference after
  normalization: lower case, ``\\text{}`` unwrapped, punctuation and the articles a/an/the removed,
  whitespace collapsed.
- ``substring``: the same prediction and normalization, and the reference's words appear as a
  contiguous run of the prediction's words (the release's SciKnowEval free-text rule, on whole
  words: ``It is oxygen.`` answers ``oxygen``; ``oxygenated`` does not).
- ``code``: the reference holds a problem's tests (``srpo.code.formats.ground_truth_tests``);
  the code between the response's last two fence lines runs in the sandbox on the tests training
  never sees (the held-out half, or all tests of a held-out problem): 1.0 iff all pass
  (``srpo.code.evaluation``). Evaluation only: training rewards come from the reward tests.

``infer_grader(data_source, answer)`` picks one for a row without an explicit grader: by the
``data_source`` name (the coding sources -> code, CommonsenseQA -> mc, StrategyQA -> yesno, the
math sources -> math, SciKnowEval -> mc for a letter answer, substring otherwise), else by the
answer's form (a single letter -> mc, yes/no -> yesno, anything else -> math).
"""

from __future__ import annotations

import re
import string
import threading

from srpo.thoughts import extract_boxed

__all__ = ["GRADERS", "grade", "infer_grader", "math_equivalent", "extract_prediction"]

GRADERS = ("math", "mc", "yesno", "exact", "substring", "code")

#: data_source substrings (lower case) -> grader; checked in order
_SOURCE_RULES = (
    *((name, "code") for name in ("livecodebench", "lcb", "code_generation", "mbpp", "humaneval",
                                  "apps", "taco", "codecontests", "code_contests", "leetcode",
                                  "codeforces", "synthetic_code")),
    ("commonsense", "mc"),
    ("csqa", "mc"),
    ("strategy", "yesno"),
    ("numina", "math"),
    ("acereason", "math"),
    ("aime", "math"),
    ("hmmt", "math"),
    ("math", "math"),
    ("gsm", "math"),
)

_LETTER = re.compile(r"^\s*\(?\s*([A-Ja-j])\s*\)?(?:[.:)\s].*)?$", re.DOTALL)
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
#: forms in which a response commits to a choice letter, strongest first: the last match of the
#: first tier that has one wins
_CHOICE_TIERS = (
    # "answer is B", "final answer: (B)", "final: B": an upper-case letter that no other letter
    # follows (the article in "the answer is a fridge" is not a choice)
    (re.compile(r"(?i:\b(?:answer|final)\b)(?:\s+is)?\s*[:=]?\s*\(?\s*([A-J])(?![A-Za-z])"),),
    (re.compile(r"(?i:\b(?:option|choice)\b)\s*[:=]?\s*\(?\s*([A-J])(?![A-Za-z])"),
     re.compile(r"\(\s*([A-Ja-j])\s*\)"),  # (B) or (b)
     re.compile(r"(?:^|(?<=\s))([A-Ja-j])\)"),  # B) or b) after a space or at a line start
     re.compile(r"^[ \t*]*\(?([A-Ja-j])\)?[.:]?[ \t*]*$", re.MULTILINE)),  # a letter alone
)
_STRICT_LETTER = re.compile(r"\(?[A-J]\)?")
_YES_NO_WORD = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_YES = ("yes", "true", "1")
_NO = ("no", "false", "0")


def _math_verify_timeout() -> int | None:
    # math_verify's timeout uses signal.alarm, which only works in the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


def math_equivalent(reference: str, candidate: str) -> bool:
    """Whether two answer strings are mathematically equivalent according to ``math_verify``.

    The reference is parsed as given and, if that finds nothing, wrapped in ``$...$``; the
    candidate (the content of a boxed answer) is parsed wrapped in ``\\boxed{...}``.
    """
    from math_verify import parse, verify

    timeout = _math_verify_timeout()
    gold = parse(reference, parsing_timeout=timeout)
    if not gold:
        gold = parse(f"${reference}$", parsing_timeout=timeout)
    pred = parse(f"\\boxed{{{candidate}}}", parsing_timeout=timeout)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=timeout))


def _unwrap(text: str) -> str:
    previous = None
    while previous != text:
        previous, text = text, _TEXT_WRAP.sub(r"\1", text)
    return text.strip()


def _letter(text: str | None) -> str | None:
    if text is None:
        return None
    m = _LETTER.match(_unwrap(text))
    return m.group(1).upper() if m else None


def _yes_no(text: str | None) -> bool | None:
    if text is None:
        return None
    word = _unwrap(text).strip().strip(string.punctuation + " ").lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    return None


def normalize_text(text: str) -> str:
    """Lower case, ``\\text{}`` unwrapped, punctuation and articles removed, spaces collapsed."""
    text = _unwrap(text).lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    words = [w for w in text.split() if w not in ("a", "an", "the")]
    return " ".join(words)


def extract_prediction(grader: str, response: str) -> str | None:
    """The prediction a grader reads from a response (for logs), or None."""
    boxed = extract_boxed(response)
    if grader == "math":
        return boxed
    if grader == "mc":
        letter = _letter(boxed)
        if letter is None:
            text = response.replace("</thought>", "\n")
            for tier in _CHOICE_TIERS:
                found = [(m.start(1), m.group(1)) for form in tier for m in form.finditer(text)]
                if found:
                    letter = max(found)[1].upper()
                    break
        return letter
    if grader == "yesno":
        verdict = _yes_no(boxed)
        if verdict is None:
            words = _YES_NO_WORD.findall(response)
            verdict = (words[-1].lower() in ("yes", "true")) if words else None
        return None if verdict is None else ("yes" if verdict else "no")
    if grader == "code":
        from srpo.code.grading import extract_code

        return extract_code(response)
    if grader in ("exact", "substring"):
        if boxed is not None:
            return boxed
        lines = [line for line in response.splitlines() if line.strip()]
        return lines[-1].replace("</thought>", "").strip() if lines else None
    raise ValueError(f"grader must be one of {GRADERS}; got {grader!r}")


def grade(grader: str, reference: str, response: str) -> float:
    """1.0 if ``response`` answers ``reference`` correctly under ``grader``, else 0.0.

    Raises:
        ValueError: an unknown grader, or a reference the grader cannot read (e.g. an mc
            reference that is not a letter).
    """
    if grader not in GRADERS:
        raise ValueError(f"grader must be one of {GRADERS}; got {grader!r}")
    if grader == "code":
        from srpo.code.evaluation import grade_reference

        return float(grade_reference(reference, response).correct)
    prediction = extract_prediction(grader, response)
    if grader == "math":
        return float(bool(prediction) and math_equivalent(reference, prediction))
    if grader == "mc":
        gold = _letter(reference)
        if gold is None:
            raise ValueError(f"grader 'mc' needs a choice letter A-J as the reference; got {reference!r}")
        return float(prediction == gold)
    if grader == "yesno":
        gold = _yes_no(reference)
        if gold is None:
            raise ValueError(f"grader 'yesno' needs yes/no/true/false as the reference; got {reference!r}")
        return float(prediction == ("yes" if gold else "no"))
    if prediction is None:
        return 0.0
    if grader == "substring":
        return float(_contains_words(normalize_text(prediction), normalize_text(reference)))
    return float(normalize_text(prediction) == normalize_text(reference))


def _contains_words(text: str, part: str) -> bool:
    """Whether the words of ``part`` (non-empty) appear as a contiguous run of ``text``'s."""
    words, needle = text.split(), part.split()
    if not needle:
        return False
    n = len(needle)
    return any(words[i:i + n] == needle for i in range(len(words) - n + 1))


def infer_grader(data_source: str | None, answer: str) -> str:
    """A grader for a row from its ``data_source`` name, else from the form of its answer (only
    an upper-case letter A-J, optionally in parentheses, counts as a choice letter)."""
    source = (data_source or "").lower()
    text = answer.strip()
    is_letter = _STRICT_LETTER.fullmatch(text) is not None
    if "sciknoweval" in source:
        return "mc" if is_letter else "substring"
    for key, grader in _SOURCE_RULES:
        if key in source:
            return grader
    if is_letter:
        return "mc"
    if _yes_no(text) is not None and not text.strip().isdigit():
        return "yesno"
    return "math"
