"""Draws bench/results/<date>.png from bench/results/<date>.json: completed sagas/s and p99
latency versus concurrency, one line per series (embedded, cluster)."""
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
fig, (tp, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
for name, series in data["series"].items():
    runs = sorted(series["runs"], key=lambda r: r["concurrency"])
    cs = [r["concurrency"] for r in runs]
    tp.plot(cs, [r["sagas_per_second"] for r in runs], marker="o", label=f"{name} sagas/s")
    lat.plot(cs, [r["latency_ms"]["p99"] for r in runs], marker="o", label=f"{name} p99")
    lat.plot(cs, [r["latency_ms"]["p50"] for r in runs], marker=".", linestyle="--", label=f"{name} p50")
for ax, title, unit in ((tp, "Throughput", "completed sagas/s"), (lat, "Latency (POST to terminal SSE event)", "ms")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (purchases in flight)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
lat.set_yscale("log")
fig.suptitle(f"sagashop, 10% compensating — {data['machine']}", fontsize=9)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(f"wrote {dst}")
