#!/usr/bin/env python3
"""Load benchmark: `mnist-tch serve` against the FastAPI + uvicorn server a Python user would write
(scripts/fastapi_server.py: the exported TorchScript model, one image per forward pass), both on this
machine, under the same load from wrk, alternated in one command.

    .venv/bin/python scripts/bench_serve.py [--model RUN] [--duration 30] [--connections 1,8,64,256]
                                            [--rounds 1] [--serve-flags '--max-wait-ms 0'] [--out FILE.md]

Routes: POST /predict with a 28x28 PNG of the first digit-MNIST test image, and POST
/v2/models/mnist/infer with that image as a UINT8 [1, 28, 28] JSON tensor. For each route and connection
count, each round runs wrk once against each server, the order alternating from one run to the next; the
tables give requests per second, p50 and p99 latency (wrk --latency) as min and median over the rounds,
failed requests (non-2xx answers and socket errors, summed), and each server's RSS before and after.
Without --model a one-epoch MLP is trained on data/mnist first. Needs wrk (scripts/setup.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY, DEFAULT_DATA, ROOT, read_idx  # noqa: E402

SERVERS = ("mnist-tch", "fastapi")
ROUTES = {"/predict": "image/png", "/v2/models/mnist/infer": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_accepting(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if process.poll() is not None:
            raise SystemExit(f"the server ended with {process.returncode}: {process.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing accepts on port {port} after {seconds} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_servers(run_dir: Path, work: Path, serve_flags: list[str]) -> dict:
    model_pt = work / "model.pt"
    subprocess.run([str(BINARY), "export", "--model", str(run_dir), "--out", str(model_pt)], check=True,
                   capture_output=True)
    servers = {}
    port = free_port()
    servers["mnist-tch"] = subprocess.Popen(
        [str(BINARY), "serve", "--model", str(run_dir), "--port", str(port), "--device", "cpu", *serve_flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_accepting(port, servers["mnist-tch"])
    servers["mnist-tch"].port = port
    port = free_port()
    servers["fastapi"] = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "fastapi_server.py"), "--model", str(model_pt), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_accepting(port, servers["fastapi"])
    servers["fastapi"].port = port
    return servers


def bodies(work: Path) -> dict:
    from PIL import Image

    image = read_idx(DEFAULT_DATA / "t10k-images-idx3-ubyte")[0]
    png = work / "digit.png"
    Image.fromarray(image).save(png)
    v2 = work / "infer.json"
    v2.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8",
                                          "data": image.flatten().tolist()}]}))
    scripts = {}
    for route, body in (("/predict", png), ("/v2/models/mnist/infer", v2)):
        lua = work / (body.stem + ".lua")
        lua.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{ROUTES[route]}"\n'
                       f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
        scripts[route] = lua
    return scripts


def seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(port: int, route: str, script: Path, connections: int, duration: int) -> dict:
    threads = min(connections, 2)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s",
                          "--latency", "-s", str(script), f"http://127.0.0.1:{port}{route}"],
                         capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    if "50" not in latency or "99" not in latency:
        raise SystemExit(f"wrk's output has no latency distribution:\n{out}")
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50": seconds(latency["50"]), "p99": seconds(latency["99"]), "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="run directory (default: train one epoch on data/mnist)")
    parser.add_argument("--duration", type=int, default=30, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,8,64,256")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--serve-flags", default="", help="more flags for mnist-tch serve, e.g. '--max-wait-ms 0'")
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: scripts/setup.sh installs Debian's wrk")
    connections = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    run_dir = args.model
    if run_dir is None:
        run_dir = work / "run"
        subprocess.run([str(BINARY), "train", "--data", str(DEFAULT_DATA), "--out", str(run_dir), "--epochs", "1",
                        "--device", "cpu", "--quiet"], check=True)
    scripts = bodies(work)
    servers = start_servers(run_dir, work, args.serve_flags.split())
    try:
        for name, server in servers.items():   # warm-up, then the resident size before the measured load
            wrk(server.port, "/predict", scripts["/predict"], 8, 2)
        rss_before = {name: rss_mb(s.pid) for name, s in servers.items()}
        results: dict = {}
        turn = 0
        for round_ in range(args.rounds):
            for route, script in scripts.items():
                for c in connections:
                    order = SERVERS if turn % 2 == 0 else SERVERS[::-1]
                    turn += 1
                    for name in order:
                        r = wrk(servers[name].port, route, script, c, args.duration)
                        results.setdefault((route, c, name), []).append(r)
                        print(f"round {round_ + 1} {route} c={c} {name}: {r['rps']:.0f} req/s, p50 "
                              f"{r['p50'] * 1e3:.2f} ms, p99 {r['p99'] * 1e3:.2f} ms, {r['failed']} failed",
                              flush=True)
        rss_after = {name: rss_mb(s.pid) for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.terminate()
        codes = {name: s.wait(timeout=60) for name, s in servers.items()}
    report = table(results, connections, args, rss_before, rss_after, codes)
    print(report)
    if args.out:
        args.out.write_text(report)


def table(results, connections, args, rss_before, rss_after, codes) -> str:
    load = os.getloadavg()
    lines = [f"wrk, {args.duration} s per run, {args.rounds} round(s), servers alternated; "
             f"mnist-tch serve {args.serve_flags or '(default flags)'}; "
             f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at the end.", "",
             "| route | conns | mnist-tch req/s (min / median) | p50 ms | p99 ms | failed | FastAPI req/s (min / median) "
             "| p50 ms | p99 ms | failed | throughput × | p99 ÷ |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for route in ROUTES:
        for c in connections:
            row = [route, str(c)]
            med = {}
            for name in SERVERS:
                runs = results[(route, c, name)]
                rps = [r["rps"] for r in runs]
                p50 = statistics.median(r["p50"] for r in runs)
                p99 = statistics.median(r["p99"] for r in runs)
                med[name] = (statistics.median(rps), p99)
                row += [f"{min(rps):,.0f} / {statistics.median(rps):,.0f}", f"{p50 * 1e3:.2f}", f"{p99 * 1e3:.2f}",
                        str(sum(r["failed"] for r in runs))]
            row += [f"{med['mnist-tch'][0] / med['fastapi'][0]:.1f}", f"{med['fastapi'][1] / med['mnist-tch'][1]:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| server | RSS before (MB) | RSS after (MB) | exit code after SIGTERM |", "|---|---:|---:|---:|"]
    for name in SERVERS:
        lines.append(f"| {name} | {rss_before[name]:.0f} | {rss_after[name]:.0f} | {codes[name]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
