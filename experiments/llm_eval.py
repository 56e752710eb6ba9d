"""Evaluate a model (+ optional LoRA adapter) on benchmark files: greedy pass@1 and unbiased pass@k.

    python experiments/llm_eval.py --model DIR --adapter runs/llm_olmo7b/srpo-s0/adapter \\
        --data numina_olympiads.parquet commonsense_qa.parquet strategyqa.parquet --limit 500 \\
        --device cuda --out runs/eval_srpo_s0
    python experiments/llm_eval.py --model DIR --data math5.jsonl --samples 16 --k 1 4 16

Generation is thought by thought exactly as in training (``srpo.rollout``: the release's rollout
prompt, thoughts ending at ``</thought>``, the chain ending at a step with ``\\boxed{}``, the
release's limits by default); greedy pass@1 is one argmax chain per problem; with ``--samples N``
every problem also gets N sampled chains (``--temperature``, ``--top-p``, seeded per problem) and
pass@k is the unbiased estimator 1 - C(N-c, k)/C(N, k) for each ``--k``.

Graders (``srpo.graders``): math (math-verify on the last ``\\boxed{}``), mc (a choice letter),
yesno, exact (normalized exact match), substring (the reference's words inside the normalized
prediction: the release's SciKnowEval free-text rule), code (the code between the last two fence
lines runs in the sandbox on the tests training never sees: a training problem's held-out half,
all tests of a held-out problem; correct = all pass; rows also get the fraction passed, see
docs/code.md). ``--grader NAME`` sets one for every file,
``--grader FILE_STEM=NAME`` for one file; otherwise each row's ``grader`` field, else its
``data_source`` name, else the form of its answer decides (``srpo.graders.infer_grader``).

Writes to ``--out`` (default ``runs/eval``): ``examples.jsonl`` (one row per problem, appended as
problems finish, so a killed run resumes where it stopped; rerunning the same command skips done
problems, ``--fresh`` starts over), then ``examples.parquet`` (the same rows), ``summary.csv``,
``summary.md`` and ``summary.json`` (per file: problems, grader(s), greedy pass@1 with a 95% Wilson
interval, pass@k, mean tokens).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

try:  # torch-free imports first: every input is checked before anything heavy is loaded
    from srpo.config import RELEASE_PROFILE  # noqa: E402
    from srpo.graders import GRADERS  # noqa: E402
except ModuleNotFoundError as _error:
    raise SystemExit(f"llm_eval.py: error: {_error}") from None
from experiments.cli_checks import out_dir_problem, whole_number_problem  # noqa: E402

DEFAULT_OUT = "runs/eval"
#: settings that change results: stored in eval_config.json, a rerun must match them to resume
RESULT_KEYS = ("model", "adapter", "dtype", "samples", "k", "temperature", "top_p", "seed",
               "max_thoughts", "max_thought_tokens", "max_response_tokens", "max_model_len",
               "question_field", "answer_field", "grader")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad input as one line (no usage block) and exits with status 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="llm_eval.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--adapter", default=None, help="a LoRA adapter directory (peft save_pretrained)")
    p.add_argument("--data", nargs="+", required=True, help="benchmark files (.jsonl / .parquet)")
    p.add_argument("--grader", nargs="+", default=None,
                   help=f"NAME for every file or STEM=NAME per file; names: {', '.join(GRADERS)}")
    p.add_argument("--question-field", default=None)
    p.add_argument("--answer-field", default=None)
    p.add_argument("--limit", type=int, default=None, help="at most this many problems per file")
    p.add_argument("--samples", type=int, default=0, help="sampled chains per problem for pass@k")
    p.add_argument("--k", type=int, nargs="+", default=None,
                   help="pass@k for these k (default: 1 and --samples)")
    p.add_argument("--temperature", type=float, default=0.7, help="temperature of the samples")
    p.add_argument("--top-p", type=float, default=0.95, help="top_p of the samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-thoughts", type=int, default=RELEASE_PROFILE["max_thoughts"])
    p.add_argument("--max-thought-tokens", type=int, default=RELEASE_PROFILE["max_thought_tokens"])
    p.add_argument("--max-response-tokens", type=int,
                   default=RELEASE_PROFILE["max_response_tokens"])
    p.add_argument("--max-model-len", type=int, default=RELEASE_PROFILE["max_model_len"])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--batch-size", type=int, default=64,
                   help="problems per generation call (also the resume granularity)")
    p.add_argument("--gen-batch-tokens", type=int, default=None,
                   help="generation batch budget in tokens (default: from free CUDA memory)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    return p


def _graders_by_file(p: OneLineParser, args) -> dict[str, str | None]:
    stems = {Path(f).stem for f in args.data}
    out: dict[str, str | None] = {stem: None for stem in stems}
    for item in args.grader or []:
        stem, _, name = item.rpartition("=")
        if name not in GRADERS:
            p.error(f"--grader {item!r}: the grader must be one of {', '.join(GRADERS)}")
        if stem:
            if stem not in stems:
                p.error(f"--grader {item!r}: no --data file has the stem {stem!r}")
            out[stem] = name
        else:
            out = {s: name for s in stems}
    return out


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check every input (one-line errors, exit 2) before any file is written."""
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("threads", "batch_size", "max_thoughts", "max_thought_tokens",
                 "max_response_tokens", "max_model_len"):
        if problem := whole_number_problem(f"--{name.replace('_', '-')}", getattr(args, name), 1):
            p.error(problem)
    for flag, value, minimum in (("--limit", args.limit, 1),
                                 ("--gen-batch-tokens", args.gen_batch_tokens, 1),
                                 ("--samples", args.samples, 0)):
        if problem := whole_number_problem(flag, value, minimum):
            p.error(problem)
    if args.k is None:
        args.k = sorted({1, args.samples}) if args.samples else []
    for k in args.k:
        if not 1 <= k <= max(args.samples, 0):
            p.error(f"--k {k}: pass@k needs 1 <= k <= --samples ({args.samples})")
    if not 0 < args.top_p <= 1:
        p.error(f"--top-p must be in (0, 1]; got {args.top_p}")
    if args.samples and not args.temperature > 0:
        p.error(f"--temperature must be > 0 for sampled chains; got {args.temperature}")
    model = Path(args.model)
    if not (model / "config.json").is_file():
        p.error(f"--model {args.model!r} holds no config.json (expected a local Hugging Face "
                "causal-LM directory)")
    if args.adapter is not None and not (Path(args.adapter) / "adapter_config.json").is_file():
        p.error(f"--adapter {args.adapter!r} holds no adapter_config.json (expected a peft "
                "adapter, e.g. runs/llm/srpo-s0/adapter)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {args.out!r} is a file; expected a directory")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: CUDA is not available; use --device cpu")
    stems = [Path(f).stem for f in args.data]
    if len(set(stems)) != len(stems):
        p.error("--data: two files share a name stem; rename one (the stem names the benchmark)")
    args.graders = _graders_by_file(p, args)
    from srpo.data import read_problems

    args.problems = {}
    for path in args.data:
        try:
            args.problems[path] = read_problems(path, args.question_field, args.answer_field,
                                                args.graders[Path(path).stem], args.limit)
        except ValueError as err:
            p.error(f"--data: {err}")
    args.settings = {key: getattr(args, key) for key in RESULT_KEYS}
    args.settings["model"] = str(model.resolve())
    if args.adapter:
        args.settings["adapter"] = str(Path(args.adapter).resolve())
    args.settings_key = hashlib.sha256(json.dumps(args.settings, sort_keys=True,
                                                  default=str).encode()).hexdigest()[:16]
    saved = out / "eval_config.json"
    if saved.is_file() and not args.fresh:
        previous = json.loads(saved.read_text()).get("key")
        if previous != args.settings_key:
            p.error(f"{out} holds results of other settings (key {previous}, this run "
                    f"{args.settings_key}); rerun with --fresh to discard them, or choose "
                    "another --out")
    if problem := out_dir_problem(out):  # last (no folder for a bad command), before any model
        p.error(problem)
    return args


def wilson(successes: int, n: int, z: float = 1.959964) -> list[float] | None:
    """95% Wilson interval of a proportion (None when n = 0)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def load(args):
    """``(model, tokenizer)``: the model in the chosen dtype, the adapter merged in."""
    import torch  # noqa: F401

    from srpo.model import load_model, resolve_dtype

    model, tokenizer = load_model(args.model, device=args.device,
                                  dtype=resolve_dtype(args.dtype, args.device))
    if args.adapter:
        from peft import PeftModel
        from transformers import AutoTokenizer

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
        if (Path(args.adapter) / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(args.adapter)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def problem_seeds(seed: int, file_index: int, problem_index: int, n: int) -> tuple[int, ...]:
    """Seeds of one problem's samples: fixed by (seed, file, problem), not by batching."""
    import numpy as np

    state = np.random.SeedSequence([seed, file_index, problem_index]).generate_state(
        n, dtype=np.uint64)
    return tuple(int(s % (2**62)) for s in state)


def evaluate_file(engine, tokenizer, task, problems, file_index, args, done, write, bar):
    """Greedy (and sampled) chains for the problems not yet done, written in batches."""
    from srpo.graders import extract_prediction, grade
    from srpo.metrics import pass_at_k
    from srpo.rollout import RolloutRequest

    todo = [(i, p) for i, p in enumerate(problems) if i not in done]
    for start in range(0, len(todo), args.batch_size):
        chunk = todo[start:start + args.batch_size]
        prompts = [tuple(tokenizer.encode(task.prompt(p))) for _, p in chunk]
        greedy = [g[0] for g in engine.rollout([RolloutRequest(pr, 1) for pr in prompts], 0.0)]
        sampled = [[] for _ in chunk]
        if args.samples:
            requests = [RolloutRequest(pr, args.samples,
                                       problem_seeds(args.seed, file_index, i, args.samples))
                        for pr, (i, _) in zip(prompts, chunk)]
            sampled = engine.rollout(requests, args.temperature)
        rows = []
        for (index, problem), chain, samples in zip(chunk, greedy, sampled):
            correct = [grade(problem.grader, problem.answer, c.text) for c in samples]
            row = {
                "index": index, "uid": problem.uid, "data_source": problem.data_source,
                "grader": problem.grader, "answer": problem.answer,
                "greedy_prediction": extract_prediction(problem.grader, chain.text),
                "greedy_correct": grade(problem.grader, problem.answer, chain.text),
                "greedy_tokens": chain.n_generated, "greedy_thoughts": chain.n_thoughts,
                "greedy_stop_reason": chain.stop_reason, "greedy_response": chain.text,
                "n_samples": len(samples), "n_correct": int(sum(c > 0.5 for c in correct)),
                "sample_tokens_mean": (sum(c.n_generated for c in samples) / len(samples)
                                       if samples else None),
            }
            for k in args.k:
                row[f"pass@{k}"] = pass_at_k(len(samples), row["n_correct"], k)
            if problem.grader == "code":  # the fraction of held-out tests passed, and which
                from srpo.code.evaluation import code_columns

                row.update(code_columns(problem.answer, chain.text))
            rows.append(row)
        write(rows)
        bar.update(len(chunk))


def summarize(frame, args):
    """One row per file: problems, graders, greedy pass@1 and its interval, pass@k, tokens."""
    import pandas as pd

    out = []
    for file, d in frame.groupby("file", sort=False):
        n, ok = len(d), int((d.greedy_correct > 0.5).sum())
        row = {"file": file, "benchmark": d.benchmark.iloc[0], "problems": n,
               "graders": "/".join(sorted(d.grader.unique())), "greedy_pass@1": ok / n,
               "greedy_pass@1_ci95": wilson(ok, n), "greedy_tokens_mean": d.greedy_tokens.mean()}
        for k in args.k:
            row[f"pass@{k}"] = float(d[f"pass@{k}"].mean())
        if "greedy_tests_passed" in d and d.greedy_tests_passed.notna().any():
            row["greedy_tests_passed"] = float(d.greedy_tests_passed.mean())
        out.append(row)
    return pd.DataFrame(out)


def _markdown(summary, args) -> str:
    cols = ["benchmark", "problems", "graders", "greedy pass@1 [95% CI]",
            *[f"pass@{k}" for k in args.k], "mean tokens"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        lo, hi = r["greedy_pass@1_ci95"]
        cells = [r.benchmark, str(r.problems), r.graders,
                 f"{100 * r['greedy_pass@1']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]",
                 *[f"{100 * r[f'pass@{k}']:.1f}%" for k in args.k],
                 f"{r.greedy_tokens_mean:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from srpo.memory import configure_cuda_allocator

    configure_cuda_allocator(args.device)  # before the first CUDA allocation
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from srpo.memory import auto_gen_batch_tokens
    from srpo.progress import Progress
    from srpo.rollout import GenerationConfig, RolloutEngine
    from srpo.tasks import DatasetTask

    hf_logging.disable_progress_bar()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    examples = out / "examples.jsonl"
    if args.fresh and examples.exists():
        examples.unlink()
    (out / "eval_config.json").write_text(json.dumps({"key": args.settings_key,
                                                      "settings": args.settings}, indent=2,
                                                     default=str))
    done: dict[str, set[int]] = {}
    if examples.is_file():
        for line in examples.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: redone
                continue
            done.setdefault(row["file"], set()).add(int(row["index"]))
        # rewrite without a possibly cut last line
        kept = [line for line in examples.read_text().splitlines() if _is_json(line)]
        examples.write_text("".join(line + "\n" for line in kept))

    t0 = time.time()
    model, tokenizer = load(args)
    budget = args.gen_batch_tokens or auto_gen_batch_tokens(model, args.device)
    config = GenerationConfig(temperature=args.temperature, top_p=args.top_p,
                              max_thoughts=args.max_thoughts,
                              max_thought_tokens=args.max_thought_tokens,
                              max_response_tokens=args.max_response_tokens,
                              max_model_len=args.max_model_len, max_batch_tokens=budget)
    engine = RolloutEngine(model, tokenizer, config, device=args.device)
    total = sum(len(ps) - len(done.get(str(Path(f)), set())) for f, ps in args.problems.items())
    bar = Progress(total, "problems", every_s=30.0)
    skipped = sum(len(v) for v in done.values())
    if skipped:
        print(f"resuming: {skipped} problems already done in {examples}", flush=True)
    for file_index, (path, problems) in enumerate(args.problems.items()):
        key = str(Path(path))
        task = DatasetTask(problems)

        def write(rows, key=key, path=path):
            with examples.open("a") as f:
                for row in rows:
                    f.write(json.dumps({"file": key, "benchmark": Path(path).stem, **row}) + "\n")

        evaluate_file(engine, tokenizer, task, problems, file_index, args,
                      done.get(key, set()), write, bar)
    bar.close()
    rows = [json.loads(line) for line in examples.read_text().splitlines()]
    frame = pd.DataFrame(rows)
    frame = frame[frame.file.isin([str(Path(f)) for f in args.data])]
    frame.to_parquet(out / "examples.parquet", index=False)
    summary = summarize(frame, args)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(_markdown(summary, args))
    (out / "summary.json").write_text(json.dumps({
        "settings": args.settings, "command": " ".join(["python", "experiments/llm_eval.py",
                                                        *(argv if argv is not None else sys.argv[1:])]),
        "files": json.loads(summary.to_json(orient="records")),
        "wall_time_s": round(time.time() - t0, 1)}, indent=2))
    print(_markdown(summary, args), end="")
    print(f"wrote {out}/examples.parquet, summary.csv, summary.md, summary.json", flush=True)
    return summary


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


if __name__ == "__main__":
    main()
