"""Time to the first user-error message: each case runs as a fresh process (as a user runs it).

    python benchmarks/first_error.py --ckpt RUN/checkpoints/best.ckpt [--out first_error.json] [--repeat 1]

Prints one line per case (seconds until the process ended, its exit status, the first line of stderr) and
writes them as JSON. A checkpoint is needed by the inference cases (a smoke run's best.ckpt is enough).
The machine's load (``os.getloadavg``) is recorded next to the numbers: timings are only comparable on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cases(ckpt: str, port: int, tmp: Path) -> dict[str, list[str]]:
    """name -> argv (after ``python -m``)."""
    run = [f"hydra.run.dir={tmp / 'run'}"]
    return {
        "train option data.batch_size=0": ["sparsecbm.train", "experiment=smoke", "data.batch_size=0", *run],
        "train option final_sparsity=1.5": ["sparsecbm.train", "experiment=smoke", "sparsity=structured",
                                             "sparsity.schedule.final_sparsity=1.5", *run],
        "train path data.root missing": ["sparsecbm.train", "data.root=/nonexistent/cebab", *run],
        "intervene option set= unknown value": ["sparsecbm.intervene", f"ckpt_path={ckpt}", "text=hi",
                                                "set={food: Great}", *run],
        "explain option n=0": ["sparsecbm.explain", f"ckpt_path={ckpt}", "n=0", *run],
        "evaluate path ckpt missing": ["sparsecbm.evaluate", "ckpt_path=/nonexistent/best.ckpt", *run],
        "evaluate path data.root missing": ["sparsecbm.evaluate", f"ckpt_path={ckpt}", "data.root=/nonexistent/x",
                                            *run],
        "serve port busy": ["sparsecbm.serve", f"ckpt_path={ckpt}", f"port={port}", *run],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default="first_error.json")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in cases(args.ckpt, port, Path(tmp)).items():
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env,
                                      cwd=ROOT, timeout=600)
                times.append(round(time.perf_counter() - start, 2))
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            first = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "")
            rows.append({"case": name, "seconds": times, "exit": proc.returncode, "message": first[:300],
                         "traceback": "Traceback" in proc.stderr})
            print(f"{name:40s} {min(times):6.2f}s exit {proc.returncode}  {first[:110]}", flush=True)
    busy.close()
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "loadavg": os.getloadavg(), "cpus": os.cpu_count(),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=ROOT).stdout.strip(), "cases": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
