"""``python -m bench [--smoke] [--only NAME[,NAME]]``: measure, print the table, write
``bench/results.json``. A missed target is reported, not an error; a measurement that
fails (a crash, a lost event, a timeout) makes the exit status 1."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import GROUPS
from bench.common import Config, GroupResult, Row, machine_info, markdown_table, notes

RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds long, tiny sizes, every code path, no thresholds",
    )
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", help=f"run only these groups: {', '.join(GROUPS)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)

    names = list(GROUPS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in GROUPS]
        if unknown:
            parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")

    tmp = Path(tempfile.mkdtemp(prefix="agentspool-bench-"))
    cfg = Config(smoke=args.smoke, tmp=tmp)
    machine = machine_info(tmp)
    command = "python -m bench" + (" --smoke" if args.smoke else "")
    command += f" --only {args.only}" if args.only else ""
    print(
        f"{command}: {machine['nproc']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}, {machine['disk']}; scratch in {tmp}",
        flush=True,
    )

    started = time.monotonic()
    results: list[GroupResult] = []
    try:
        for name in names:
            print(f"[{name}] ...", flush=True)
            t0 = time.monotonic()
            result = GroupResult(name, 0.0)
            try:
                result.rows = GROUPS[name](cfg)
            except Exception as exc:
                traceback.print_exc()
                result.error = f"{type(exc).__name__}: {exc}"
            result.seconds = time.monotonic() - t0
            for row in result.rows:
                row.evaluate(cfg.smoke)
            results.append(result)
            status = f"FAILED: {result.error}" if result.error else "done"
            print(f"[{name}] {status} in {result.seconds:.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"scratch kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - started

    rows: list[Row] = [row for r in results for row in r.rows]
    print()
    print(markdown_table(rows))
    print()
    print("\n".join(notes(rows)))
    misses = [row.label for row in rows if row.verdict == "MISS"]
    failed = [r for r in results if r.error]
    print()
    print(
        f"{len(rows)} rows, {len(misses)} target(s) missed, {len(failed)} group(s) failed; "
        f"{total:.0f} s in total ({', '.join(f'{r.name} {r.seconds:.0f} s' for r in results)})"
    )
    for r in failed:
        print(f"FAILED {r.name}: {r.error}")

    machine["loadavg_at_end"] = os.getloadavg()
    report = {
        "command": command,
        "smoke": cfg.smoke,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - total)),
        "seconds": round(total, 1),
        "machine": machine,
        "groups": [
            {
                "name": r.name,
                "seconds": round(r.seconds, 1),
                "error": r.error,
                "rows": [row.to_json() for row in r.rows],
            }
            for r in results
        ],
    }
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
