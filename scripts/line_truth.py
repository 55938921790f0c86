"""Check a synthetic line's verdicts against the camera's own ground truth: confusion counts.

Reads the JSON lines of ``edge-inspect listen --json`` and recomputes, from each verdict's sequence
number, which part the synthetic camera showed (edge_inspect.camera.synthetic.true_class). Prints good
parts passed / rejected, defects caught / escaped and unknown verdicts, per defect type too.
Usage: python scripts/line_truth.py VERDICTS.jsonl --seed 7 --defect-rate 0.3
Exit 1 when no verdict was found.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.camera.synthetic import true_class


def confusion(records, seed: int, defect_rate: float) -> tuple[Counter, Counter]:
    """(overall counts, per-defect-type counts) of verdict records (wire bodies: "seq", "result_state")."""
    total, per_type = Counter(), Counter()
    for r in records:
        truth = true_class(seed, int(r["seq"]), defect_rate)
        label = r["result_state"]
        if label == "unknown":
            total["unknown"] += 1
        elif truth == "good":
            total["good_rejected" if label == "ng" else "good_passed"] += 1
        else:
            key = "defect_caught" if label == "ng" else "defect_escaped"
            total[key] += 1
            per_type[(truth, key)] += 1
    return total, per_type


def _line(r: dict, truth: str) -> str:
    score = "-" if r.get("score") is None else f"{r['score']:.3f}"
    mark = "" if r["result_state"] == "unknown" or (r["result_state"] == "ng") == (truth != "good") else "   <-- wrong"
    return (f"  seq={r['seq']:<5} {r['result_state'].upper():<7} score={score:<9} "
            f"threshold={r['threshold']:.3f}  truth={truth}{mark}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("verdicts", help="JSON lines from 'edge-inspect listen --json'")
    ap.add_argument("--seed", type=int, required=True, help="the synthetic:// URI's seed")
    ap.add_argument("--defect-rate", type=float, required=True, help="the synthetic:// URI's defect_rate")
    ap.add_argument("--show", type=int, default=0, metavar="N",
                    help="also print the first and last N verdicts with their truth")
    args = ap.parse_args()
    records = []
    for line in Path(args.verdicts).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("event") == "verdict":
            records.append(rec)
    if not records:
        print("line truth: no verdicts found", file=sys.stderr)
        return 1
    if args.show:
        shown = records if len(records) <= 2 * args.show else records[: args.show] + [None] + records[-args.show :]
        for r in shown:
            print("   ..." if r is None else _line(r, true_class(args.seed, int(r["seq"]), args.defect_rate)))
    c, per_type = confusion(records, args.seed, args.defect_rate)
    goods = c["good_passed"] + c["good_rejected"]
    defects = c["defect_caught"] + c["defect_escaped"]
    print(f"against the synthetic camera's truth ({len(records)} verdicts):")
    print(f"  good parts:    {goods:4d}  passed {c['good_passed']}, rejected {c['good_rejected']}"
          + (f" ({100 * c['good_rejected'] / goods:.1f} % false rejects)" if goods else ""))
    print(f"  defects:       {defects:4d}  caught {c['defect_caught']}, escaped {c['defect_escaped']}"
          + (f" ({100 * c['defect_escaped'] / defects:.1f} % escapes)" if defects else ""))
    types = sorted({t for t, _ in per_type})
    if types:
        print("  per type:      " + ", ".join(
            f"{t} {per_type[(t, 'defect_caught')]}/"
            f"{per_type[(t, 'defect_caught')] + per_type[(t, 'defect_escaped')]} caught"
            for t in types))
    print(f"  unknown:       {c['unknown']:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
