"""Apply each plausible bug of the method registry once and report which test catches it.

    python tests/srpo/mutate_methods.py            # runs tests/srpo/test_methods_hand.py per mutation

Each mutation is a one-line source change (restored afterwards, even on error); the output names
the failing tests. Not collected by pytest (the name does not start with test_).
"""

import re
import shutil
import subprocess
import sys

MUT = [
    (
        "spo-tree sibling mean without the node itself",
        "srpo/advantages.py",
        "adv[has] = V[has] - sib_sum[parent[has]] / sib_n[parent[has]]",
        "adv[has] = V[has] - (sib_sum[parent[has]] - V[has]) / np.maximum(sib_n[parent[has]] - 1, 1)",
    ),
    (
        "treerl without 1/sqrt(leaves)",
        "srpo/advantages.py",
        "adv[has] = ((V[has] - V[root[has]]) + (V[has] - vp)) / np.sqrt(count[has])",
        "adv[has] = ((V[has] - V[root[has]]) + (V[has] - vp))",
    ),
    (
        "score alpha shaping sign flipped",
        "srpo/advantages.py",
        "bonus = alpha * (r[i] - r1[int(p)]) if stage == 2 else 0.0",
        "bonus = alpha * (r1[int(p)] - r[i]) if stage == 2 else 0.0",
    ),
    (
        "critique f(p) on the original rows",
        "srpo/loss.py",
        "per_token = torch.where(rows[:, None], -adv * (p / (p + gamma)), -adv * ratio)",
        "per_token = torch.where(~rows[:, None], -adv * (p / (p + gamma)), -adv * ratio)",
    ),
    (
        "localization offset added instead of subtracted",
        "srpo/methods/resets.py",
        "k = min(max(res.k - ctx.localization_offset, 1), n)",
        "k = min(max(res.k + ctx.localization_offset, 1), n)",
    ),
    (
        "prefix mask one token short",
        "srpo/methods/resets.py",
        "mask = [prefix_mask] * c.prefix_len + [1] * (len(c.response_ids) - c.prefix_len)",
        "mask = [prefix_mask] * max(c.prefix_len - 1, 0) + [1] * (len(c.response_ids) - c.prefix_len + min(c.prefix_len, 1))",
    ),
    (
        "failed parent chosen by reward <= 0.5",
        "srpo/methods/resets.py",
        "            and not score.correct\n",
        "            and score.reward <= 0.5\n",
    ),
    (
        "release GRPO estimator with ddof 0",
        "srpo/advantages.py",
        'ddof = 0 if std == "population" else 1',
        "ddof = 0",
    ),
    (
        "spo-tree probability mask without the kept-token rescaling",
        "srpo/advantages.py",
        "out = np.where(kept, out * scale[:, None], 0.0)",
        "out = np.where(kept, out, 0.0)",
    ),
    (
        "critique best refinement: the last correct one",
        "srpo/methods/critique_grpo.py",
        "key=lambda i: (scores[i].correct, scores[i].reward, -i))",
        "key=lambda i: (scores[i].correct, scores[i].reward, i))",
    ),
]


def main(tests) -> None:
    for name, path, old, new in MUT:
        src = open(path).read()
        assert src.count(old) == 1, (name, src.count(old))
        shutil.copy(path, "/tmp/mut_backup")
        open(path, "w").write(src.replace(old, new))
        try:
            r = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                capture_output=True,
                text=True,
                timeout=600,
            )
            failed = [f.split("::")[-1] for f in re.findall(r"FAILED (\S+)", r.stdout)]
            verdict = "CAUGHT by " + ", ".join(failed) if failed else "NOT CAUGHT"
            print(f"{name}: {verdict}", flush=True)
        finally:
            shutil.copy("/tmp/mut_backup", path)


if __name__ == "__main__":
    main(sys.argv[1:] or ["tests/srpo/test_methods_hand.py"])
