"""Calibrate and check whichsound's confidence on the public benchmark's results.

Reads one or more `score.py --out results.json` files (each run's verdict carries `evidence`), prints the
reliability table of the confidence as shipped (stated confidence bins vs how often the verdict was right)
and, with --fit, fits the logistic weights of `whichsound.locate.CAL_FOUND` / `CAL_NONE` by maximum
likelihood (Newton iterations, small L2 penalty) and prints the table the fitted weights would give.
Fit on some seeds and check on others: the figures that count are on results not used for fitting.

    python benchmarks/calibrate.py /tmp/results_seed1.json [--fit] [--check /tmp/results_seed2.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load_runs(paths: list[Path]) -> list[dict]:
    """Every run with a valid verdict and evidence: {'verdict', 'correct', ...}."""
    runs = []
    for p in paths:
        doc = json.loads(Path(p).read_text())
        recs = doc.get("locate", {}).get("clips", []) + doc.get("batch", {}).get("rows", [])
        for rec in recs:
            v = rec.get("verdict")
            if not v or "evidence" not in v or rec.get("correct") is None:
                continue
            runs.append({"verdict": v, "correct": bool(rec["correct"]), "condition": rec.get("condition")})
    return runs


def features(v: dict) -> tuple[str, np.ndarray]:
    """('found'|'none', feature vector): whichsound's own confidence_features, so both use one definition."""
    from whichsound.locate import confidence_features

    found = v["stem"] is not None
    return ("found" if found else "none"), np.array(confidence_features(v["evidence"], found))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Maximum-likelihood logistic weights by Newton's method with an L2 penalty (not on the intercept)."""
    w = np.zeros(x.shape[1])
    pen = np.full(x.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -40, 40)))
        grad = x.T @ (p - y) + pen * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def reliability(conf: np.ndarray, correct: np.ndarray, title: str) -> None:
    """Print stated-confidence bins vs accuracy, the Brier score and the expected calibration error."""
    edges = np.array([0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0001])
    print(f"\n{title}  (n={len(conf)})")
    print(f"{'confidence':>12} {'n':>5} {'stated':>7} {'right':>7}")
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= lo) & (conf < hi)
        if m.any():
            ece += m.sum() / len(conf) * abs(conf[m].mean() - correct[m].mean())
            print(f"{lo:5.2f}-{min(hi, 1):4.2f} {m.sum():5d} {conf[m].mean():7.3f} {correct[m].mean():7.3f}")
    print(f"brier {np.mean((conf - correct) ** 2):.4f}   ECE {ece:.4f}   accuracy {correct.mean():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--fit", action="store_true", help="fit CAL_FOUND / CAL_NONE on these results")
    ap.add_argument("--check", nargs="*", type=Path, default=[], help="results to check the fitted weights on")
    args = ap.parse_args()
    runs = load_runs(args.results)
    if not runs:
        raise SystemExit("no runs with verdict evidence in these files")
    conf = np.array([r["verdict"]["confidence"] for r in runs])
    correct = np.array([r["correct"] for r in runs], dtype=float)
    reliability(conf, correct, "confidence as shipped")
    if not args.fit:
        return
    weights = {}
    for kind in ("found", "none"):
        sel = [(features(r["verdict"])[1], r["correct"]) for r in runs if features(r["verdict"])[0] == kind]
        if len(sel) < 5:
            print(f"too few '{kind}' verdicts to fit ({len(sel)})")
            continue
        x = np.array([s[0] for s in sel])
        y = np.array([s[1] for s in sel], dtype=float)
        weights[kind] = fit_logistic(x, y)
        print(f"CAL_{kind.upper()} = ({', '.join(f'{w:.3f}' for w in weights[kind])})")

    def fitted(rs):
        out = []
        for r in rs:
            kind, x = features(r["verdict"])
            w = weights.get(kind)
            out.append(r["verdict"]["confidence"] if w is None else 1 / (1 + np.exp(-float(np.clip(x @ w, -40, 40)))))
        return np.array(out)

    reliability(fitted(runs), correct, "fitted weights, on the fitting results")
    if args.check:
        held = load_runs(args.check)
        reliability(fitted(held), np.array([r["correct"] for r in held], dtype=float), "fitted weights, held out")


if __name__ == "__main__":
    main()
