"""Draws bench/results/<date>.png from bench/results/<date>.json: completed sagas/s, p99
latency and server CPU per saga versus concurrency, one line per series (embedded, cluster,
restate when the run had --with-restate)."""
import json
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src, dst = sys.argv[1], sys.argv[2]
data = json.load(open(src))
fig, (tp, lat, cpu) = plt.subplots(1, 3, figsize=(15, 4.2))
for name, series in data["series"].items():
    runs = sorted(series["runs"], key=lambda r: r["concurrency"])
    cs = [r["concurrency"] for r in runs]
    tp.plot(cs, [r["sagas_per_second"] for r in runs], marker="o", label=f"{name} sagas/s")
    lat.plot(cs, [r["latency_ms"]["p99"] for r in runs], marker="o", label=f"{name} p99")
    lat.plot(cs, [r["latency_ms"]["p50"] for r in runs], marker=".", linestyle="--", label=f"{name} p50")
    per_saga = [(r["concurrency"], (r.get("cpu_per_saga") or {}).get("server_ms")) for r in runs]
    per_saga = [(c, ms) for c, ms in per_saga if ms is not None]
    if per_saga:
        cpu.plot(*zip(*per_saga), marker="o", label=f"{name} server CPU")
for ax, title, unit in ((tp, "Throughput", "completed sagas/s"), (lat, "Latency (POST to terminal SSE event)", "ms"),
                        (cpu, "Server CPU per completed saga", "ms (user + system)")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (purchases in flight)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
lat.set_yscale("log")
cpu.set_yscale("log")
fig.suptitle(f"sagashop, 10% compensating — {data['machine']}", fontsize=9)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(f"wrote {dst}")
