"""Turns a Restate peer run (../shared/peers/restate/bench.sh, its OUT directory) into the
"restate" series of bench/results/<date>.json: the fail10 phases (10% of purchases compensate,
as in our runs), one run per concurrency, in the fields our own runs use, so the plot and the
README compare like with like.

Usage: restate_series.py OUT_DIR   (prints the series as JSON)"""
import glob
import json
import sys

out = sys.argv[1]
summaries = glob.glob(f"{out}/*.summary.json")
if not summaries:
    sys.exit(f"no Restate summary in {out}: see its logs there")
report = json.load(open(summaries[0]))
runs = []
for ph in report.get("phases", []):
    if ph.get("case") != "fail10":
        continue
    lat = ph["lat_ms"]
    runs.append({
        "concurrency": ph["concurrency"],
        "completed": ph["completed"],
        "errors": ph["errors"],
        "sagas_per_second": ph["throughput_per_s"],
        "latency_ms": {k: lat[k] for k in ("p50", "p90", "p99", "max")},
        # The engine is the Restate server and the service it drives (our server_ms counts
        # the one sagashop process that does both).
        "cpu_per_saga": {"server_ms": ph.get("engine_cpu_ms_per_saga")},
        "peak_rss_mib": ph.get("engine_peak_rss_mib"),
        "by_status": ph.get("by_status"),
    })
if not runs:
    sys.exit(f"the Restate run in {out} has no fail10 phase")
print(json.dumps({
    "runs": runs,
    "consistency_ok": report.get("consistency_ok"),
    "cold_start_s": report.get("cold_start_s"),
}))
