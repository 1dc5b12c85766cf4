"""One ``torchrun --nproc_per_node 2`` launch (gloo) that runs several two-process test jobs in turn.

Each launch costs three interpreters importing torch and ebmssl (the agent and two workers, ~5 s of CPU
each) and a rendezvous; the gather, parity-gather, predictive and collective-safety checks share one
(tests/distributed/conftest.py). A job is a module with ``run_job(spec) -> result`` that runs on every
process with the process group up; process 0 writes ``{job name: its result}`` as JSON. A job that raises
is reported as ``{"error": ...}`` under its name, and the next job still runs.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

import torch
import torch.distributed as dist


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = {}
    for name, job in spec["jobs"].items():
        try:
            results[name] = importlib.import_module(job["module"]).run_job(job["spec"])
        except Exception as error:  # noqa: BLE001  reported under the job's name
            results[name] = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()[-3000:]}"}
        dist.barrier()  # the next job starts together on both processes
    if dist.get_rank() == 0:
        with open(spec["output"], "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
