"""Run the benchmarks, print a table, write ``benchmarks/results/<machine>.json``.

    python -m benchmarks [--quick] [--only NAME ...] [--device cpu|cuda] [--out FILE]

``--device cuda`` runs the benchmarks that have a GPU path (train, harvest, steer, stats) on the GPU, and only
those. Each benchmark module has ``run(quick) -> list[Row]``; a benchmark whose piece of saewidgets is missing (or that
fails) is reported as skipped with the reason, and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from .timing import DEVICE_BENCHMARKS, Row, machine, set_device

BENCHMARKS = {
    "train": "SAE training tokens/s vs SAELens SAETrainer, and vs the matmul ceiling",
    "harvest": "harvest tokens/s vs a plain HF forward hooked at the layer, and vs a full forward",
    "stats": "feature-statistics pass tokens/s (16k features) vs encoding alone",
    "umap": "feature-map (UMAP) seconds for 4k and 16k features vs umap-learn defaults",
    "map": "feature-map structure (neighbour recall, trustworthiness) on the demo SAEs: defaults and a sweep",
    "steer": "steered generation time vs plain HF generate",
    "steering": "eval-prompt steering hit rate: README SAE recipe vs DiffMean vs prompting, 6 concepts, 2 SAEs",
    "demo": "saewidgets demo's peak RSS and wall time (quick and full; first and cached run) in a child process",
    "widgets": "static HTML payload bytes and chromium render time (10k-token heatmap, 16k-point map)",
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def format_table(rows: list[Row]) -> str:
    """A Markdown table: figure, ours, reference, ratio (with the goal and whether it is met)."""
    lines = ["| benchmark | figure | ours | reference | ours / reference | goal |", "|---|---|---|---|---|---|"]
    for r in rows:
        goal = (
            ""
            if r.goal is None
            else f"{'>=' if r.better == 'higher' else '<='} {r.goal:g}x " + ("(met)" if r.met else "(not met)")
        )
        lines.append(
            f"| {r.benchmark} | {r.figure} | {_num(r.ours)} {r.unit} | {_num(r.reference)} {r.unit} "
            f"({r.reference_name}) | {r.ratio:.2f}x ({r.better} is better) | {goal} |"
        )
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def write_json(
    path: Path, info: dict, mode: str, rows: list[Row], skipped: dict[str, str], seconds: dict[str, float]
) -> list[dict]:
    """Write the machine, every row (with its raw samples) and the Markdown table as JSON at ``path``.

    Rows of benchmarks not run this time are kept from an existing file of the same mode (``--only`` updates
    part of the table); each row carries the date it was measured. Returns all rows written."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ran = set(seconds)
    fresh = [{**r.to_dict(), "date": now} for r in rows]
    kept: list[dict] = []
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("mode") == mode:
            kept = [r for r in old.get("rows", []) if r["benchmark"] not in ran]
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    all_rows = sorted(kept + fresh, key=lambda r: order.get(r["benchmark"], len(order)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "machine": info,
                "mode": mode,
                "date": now,
                "seconds": seconds,
                "rows": all_rows,
                "skipped": skipped,
                "table_markdown": format_table([_row(r) for r in all_rows]),
            },
            indent=1,
        )
    )
    return all_rows


def _row(data: dict) -> Row:
    return Row(**{k: data[k] for k in Row.__dataclass_fields__})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs and fewer repeats (a few minutes)")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help=f"where {', '.join(DEVICE_BENCHMARKS)} run (cpu, cuda, cuda:N); other benchmarks are CPU only",
    )
    parser.add_argument("--out", type=Path, help="JSON file to write (default benchmarks/results/<machine>.json)")
    args = parser.parse_args(argv)
    try:
        chosen = set_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    on_cpu = chosen.type == "cpu"
    cpu_only = sorted(set(args.only or ()) - set(DEVICE_BENCHMARKS))
    if not on_cpu and cpu_only:
        parser.error(f"--device {args.device}: {', '.join(cpu_only)} run on the CPU only; drop --device or --only.")

    info = {**machine(), "device": str(chosen)}
    names = args.only or (list(BENCHMARKS) if on_cpu else list(DEVICE_BENCHMARKS))
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in names:
        print(f"[{name}] {BENCHMARKS[name]} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            rows += importlib.import_module(f".bench_{name}", __package__).run(quick=args.quick)
        except Exception as exc:  # noqa: BLE001 -- one broken benchmark must not hide the others
            skipped[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        seconds[name] = time.perf_counter() - start
        print(f"[{name}] {seconds[name]:.0f} s", file=sys.stderr, flush=True)

    table = format_table(rows)
    print(
        f"\nMachine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads)"
        f"{', GPU ' + info['gpu'] if info['gpu'] else ', no GPU'}; device {chosen}; "
        f"mode: {'quick' if args.quick else 'full'}\n"
    )
    print(table)
    for name, why in skipped.items():
        print(f"\nskipped {name}: {why}")
    suffix = ("" if on_cpu else f"-{chosen.type}") + ("-quick" if args.quick else "")
    out = args.out or RESULTS_DIR / f"{info['name']}{suffix}.json"
    written = write_json(out, info, "quick" if args.quick else "full", rows, skipped, seconds)
    print(f"\nwrote {out} ({len(written)} rows, {len(written) - len(rows)} kept from earlier runs)")
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
