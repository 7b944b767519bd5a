#!/usr/bin/env python3
"""Mutation testing of repro's pure modules with mutmut, against their fast unit tests only.

    .venv/bin/pip install -e '.[test,mutation]'
    .venv/bin/python tools/mutation.py            # fresh run (~2-4 min on 2 cores), prints the score
    .venv/bin/python tools/mutation.py --keep     # reuse mutants/ from the last run (only re-tests changes)

What is mutated ([tool.mutmut] in pyproject.toml): metaflow_repro/model/spec.py, metaflow_repro/model/lock.py,
metaflow_repro/checks/compare.py, metaflow_repro/checks/drift.py, metaflow_repro/report/render.py, metaflow_repro/report/document.py,
metaflow_repro/checks/pickles.py, with
tests/unit/ as the only tests. The score counts the pure functions of those modules (SCOPE
below); their impure neighbours (subprocess probes, resolver calls) are mutated too but are the
business of the slow tests, not of this score.

Score = killed / (in scope - judged equivalent). Surviving mutants judged equivalent (no test
can tell them apart from the original: same observable behaviour) are listed in EQUIVALENT with
the reason; every other survivor is printed so it can be killed or judged. Exit 1 below TARGET.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.85

# mutmut names mutants <module>.x_<function>__mutmut_<n> and <module>.xǁ<Class>ǁ<method>__mutmut_<n>
SCOPE = [
    r"repro\.model\.spec\.",
    r"repro\.model\.lock\.",
    r"repro\.checks\.compare\.(x_compare|x__describe_bytes|xǁComparisonǁ)",
    r"repro\.checks\.drift\.(x_check_against|x__changes)",
    r"repro\.report\.document\.(x_build_flow|x_drift_report|x_plain|x__schema_of|x_json_schema)",
    r"repro\.report\.render\.",
    r"repro\.checks\.pickles\.(x_referenced_modules|x__static|x_downstream|x_is_internal)",
]

# Survivors judged equivalent: mutant name -> why no test can tell it from the original.
_DEAD_DECODE = "dead branch: pickletools gives str (never bytes) for every string opcode on Python 3"
_TABULATE = "tabulate falls back to its 'simple' format for a missing, None or unknown tablefmt"
_DEFAULT_TOL = "the comparators default to the same tolerance when the key is missing"
_ORDER = "every result's step is in `order` (built from both runs' steps): the default is never used"
EQUIVALENT: dict[str, str] = {
    "metaflow_repro.model.lock.x__need__mutmut_11": "typ is always a class, which has __name__: the default is never used",
    "metaflow_repro.model.lock.x__need__mutmut_14": "typ is always a class, which has __name__: the default is never used",
    "metaflow_repro.model.spec.x__python__mutmut_16": "(3, m, p) and (3, m) order the same against MIN_PYTHON (3, 7)",
    "metaflow_repro.model.spec.x_implicit_needs__mutmut_6": "(3, m, p) and (3, m) order the same against (3, 8)",
    "metaflow_repro.model.spec.x_merge__mutmut_41": "both declarations have the same kind here (mixed kinds raised above)",
    "metaflow_repro.model.spec.x_merge__mutmut_180": "disabled=False is EnvSpec's default",
    "metaflow_repro.report.render.x_flow_report__mutmut_107": "without a comparison by_step is {}, so .get gives None too",
    "metaflow_repro.report.render.x_terminal__mutmut_18": _TABULATE,
    "metaflow_repro.report.render.x_terminal__mutmut_21": _TABULATE,
    "metaflow_repro.report.render.x_terminal__mutmut_23": _TABULATE,
    "metaflow_repro.report.render.x_terminal__mutmut_24": _TABULATE,
    "metaflow_repro.checks.compare.x_compare__mutmut_2": _DEFAULT_TOL,
    "metaflow_repro.checks.compare.x_compare__mutmut_3": _DEFAULT_TOL,
    "metaflow_repro.checks.compare.x_compare__mutmut_5": _DEFAULT_TOL,
    "metaflow_repro.checks.compare.x_compare__mutmut_6": _DEFAULT_TOL,
    "metaflow_repro.checks.compare.x_compare__mutmut_145": _ORDER,
    "metaflow_repro.checks.compare.x_compare__mutmut_147": _ORDER,
    "metaflow_repro.checks.compare.x_compare__mutmut_148": _ORDER,
    "metaflow_repro.checks.compare.x_compare__mutmut_149": _ORDER,
    "metaflow_repro.checks.compare.x_compare__mutmut_150": _ORDER,
    "metaflow_repro.checks.drift.x_check_against__mutmut_36": "diff_packages never reads the old PlatformLock's platform",
    "metaflow_repro.checks.pickles.x_referenced_modules__mutmut_9": "a GLOBAL argument is 'module name': split() == split(' ')",
    "metaflow_repro.checks.pickles.x_referenced_modules__mutmut_18": _DEAD_DECODE,
    "metaflow_repro.checks.pickles.x_referenced_modules__mutmut_19": _DEAD_DECODE,
    "metaflow_repro.checks.pickles.x_referenced_modules__mutmut_20": _DEAD_DECODE,
    "metaflow_repro.checks.pickles.x_referenced_modules__mutmut_21": _DEAD_DECODE,
    "metaflow_repro.checks.pickles.x_referenced_modules__mutmut_66": "'builtins' is in sys.stdlib_module_names already",
    "metaflow_repro.checks.pickles.x_referenced_modules__mutmut_67": "'builtins' is in sys.stdlib_module_names already",
}


def in_scope(name: str) -> bool:
    return any(re.match(p, name) for p in SCOPE)


def results() -> dict[str, str]:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("mutmut")), "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    out = {}
    for line in proc.stdout.splitlines():
        if ":" in line and "__mutmut_" in line:
            name, status = line.strip().split(": ", 1)
            out[name] = status.strip()
    if not out:
        sys.exit(f"mutmut results gave nothing:\n{proc.stdout}\n{proc.stderr}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="reuse mutants/ (default: start from a clean copy)")
    ap.add_argument("--show", action="store_true", help="print the diff of every surviving, non-equivalent mutant")
    args = ap.parse_args()
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        sys.exit("mutmut is not installed: pip install -e '.[mutation]'")
    if not args.keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    started = time.time()
    run = subprocess.run([str(mutmut), "run"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
        return run.returncode
    got = {k: v for k, v in results().items() if in_scope(k)}
    stale = sorted(set(EQUIVALENT) - {k for k, v in got.items() if v not in ("killed", "timeout")})
    counts = Counter(got.values())
    caught = ("killed", "timeout")  # a mutant that hangs the tests is caught too
    survivors = sorted(k for k, v in got.items() if v not in caught and k not in EQUIVALENT)
    judged = len(set(EQUIVALENT) & {k for k, v in got.items() if v not in caught})
    killed = sum(counts[c] for c in caught)
    total = len(got) - judged
    score = killed / total if total else 0.0
    print(f"mutmut on the pure modules, tests/unit only: {len(got)} mutants in scope, {time.time() - started:.0f}s")
    print("  " + ", ".join(f"{status}: {n}" for status, n in sorted(counts.items())))
    print(f"  judged equivalent: {judged}")
    print(
        f"score: {killed}/{total} killed = {score:.1%} (target {TARGET:.0%}); "
        f"without the equivalence judgement: {killed / len(got):.1%}"
    )
    if EQUIVALENT:
        print("\njudged equivalent:")
        for name in sorted(set(EQUIVALENT) & set(got)):
            print(f"  {name}: {EQUIVALENT[name]}")
    by_function = Counter(re.sub(r"__mutmut_\d+$", "", k) for k in survivors)
    if survivors:
        print(f"\nnot killed ({len(survivors)}), by function:")
        for fn, n in by_function.most_common():
            print(f"  {n:4d}  {fn}")
    if args.show:
        for name in survivors:
            print(subprocess.run([str(mutmut), "show", name], cwd=ROOT, capture_output=True, text=True).stdout)
    if stale:
        print(f"\nEQUIVALENT lists mutants that no longer survive (remove them): {stale}")
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
