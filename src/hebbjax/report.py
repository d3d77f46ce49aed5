"""A multirun as a table: ``python -m hebbjax.report <multirun dir> [--metric test_accuracy]``.

Collects the ``results.json`` of every job folder below the directory, groups the runs by their
command-line overrides other than ``seed`` (Hydra's ``.hydra/overrides.yaml`` of each job), and
writes one row per group: the number of seeds and the metric's mean ± std over them (population
std, as the papers report), sorted best first. Written as ``report.md`` and ``report.csv`` in the
directory and printed. A job folder that has no readable ``results.json`` (a crashed or running
job) is listed by name as broken.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

IGNORED = ("seed", "resume", "hydra.sweep.dir", "hydra.run.dir")


def _overrides(job: Path) -> list[str]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    import yaml

    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def _group_key(overrides: list[str]) -> str:
    kept = sorted(o.lstrip("+~") for o in overrides if o.lstrip("+~").split("=", 1)[0] not in IGNORED
                  and not o.lstrip("+~").startswith(("logging.", "checkpoint.")))
    return " ".join(kept) or "(defaults)"


def collect(folder: str | Path, metric: str = "test_accuracy") -> tuple[list[dict[str, Any]], list[str]]:
    """``(rows, broken)``: per group of overrides, its seeds and the metric's mean and std; the
    job folders without a readable result."""
    folder = Path(folder)
    jobs = sorted({p.parent.parent for p in folder.rglob(".hydra/overrides.yaml")} | {p.parent for p in folder.rglob("results.json")})
    groups: dict[str, list[tuple[int, float]]] = defaultdict(list)
    broken = []
    for job in jobs:
        try:
            result = json.loads((job / "results.json").read_text())
            value = float(result[metric])
        except (OSError, ValueError, KeyError, TypeError):
            broken.append(str(job.relative_to(folder)) if job != folder else ".")
            continue
        groups[_group_key(_overrides(job))].append((int(result.get("seed", 0)), value))
    rows = []
    for key, runs in groups.items():
        values = np.asarray([v for _, v in runs])
        rows.append({"overrides": key, "seeds": sorted(s for s, _ in runs), "n": len(values),
                     "mean": float(values.mean()), "std": float(values.std())})
    rows.sort(key=lambda r: -r["mean"])
    return rows, broken


def markdown(rows: list[dict[str, Any]], broken: list[str], metric: str) -> str:
    lines = [f"| overrides | seeds | {metric} (mean ± std) |", "|---|---|---|"]
    lines += [f"| `{r['overrides']}` | {r['n']} ({', '.join(map(str, r['seeds']))}) | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} % |"
              if metric.endswith("accuracy") else
              f"| `{r['overrides']}` | {r['n']} ({', '.join(map(str, r['seeds']))}) | {r['mean']:.4g} ± {r['std']:.2g} |" for r in rows]
    if broken:
        lines += ["", "Broken job folders (no readable results.json): " + ", ".join(f"`{b}`" for b in broken)]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["overrides", "n", "seeds", "mean", "std"])
    for r in rows:
        writer.writerow([r["overrides"], r["n"], " ".join(map(str, r["seeds"])), r["mean"], r["std"]])
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a multirun directory (multirun/<experiment>/<date>)")
    parser.add_argument("--metric", default="test_accuracy", help="a number in results.json (default: test_accuracy)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        raise SystemExit(f"hebbjax.report: {folder} is not a folder")
    rows, broken = collect(folder, args.metric)
    if not rows and not broken:
        raise SystemExit(f"hebbjax.report: no job folders with results.json under {folder}")
    table = markdown(rows, broken, args.metric)
    (folder / "report.md").write_text(table)
    (folder / "report.csv").write_text(to_csv(rows))
    print(table, end="")


if __name__ == "__main__":
    main()
