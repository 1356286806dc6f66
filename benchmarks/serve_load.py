"""Load test of `convrec serve`: many concurrent conversations against one run, loopback only.

    python benchmarks/serve_load.py --run RUN_DIR [--sessions 200] [--turns 10]
        [--workers 1 2] [--time-limit 900]

For each `--workers` value (model calls at a time, in the server's thread pool) a fresh
`convrec serve` process is started on 127.0.0.1 with an empty database; `--sessions`
clients then talk at once, each sending `--turns` messages one after another, while a
probe asks `/health` every 0.25 s (the event loop must keep answering while models
think). Afterwards the server is stopped and the SQLite file is counted: every answered
turn must be there (0 lost). Everything is bounded: a request times out after 120 s and
the whole run after `--time-limit` seconds. Records per-message latency p50/p95/max,
throughput, errors, /health latency under load, the turn count and the server's
start-up time (process start to first answer) in
benchmarks/results/serve_load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from convrec.serving.store import SessionStore
from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MESSAGES = (
    "Hi! I love sci-fi movies",
    "Something with a good story",
    "I also like drama",
    "Anything from the 1990s?",
    "What about a comedy?",
    "I liked the last one you said",
    "Maybe something darker",
    "Any thriller?",
    "Something for a family evening",
    "Thanks, one more please",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def conversation(client: httpx.AsyncClient, turns: int, latencies: list[float]) -> int:
    """One client's conversation; returns how many messages failed."""
    errors = 0
    response = await client.post("/sessions", json={})
    session = response.json()["id"]
    for n in range(turns):
        started = time.perf_counter()
        try:
            reply = await client.post(
                f"/sessions/{session}/messages", json={"text": MESSAGES[n % len(MESSAGES)]}
            )
            if reply.status_code != 200 or not reply.json()["items"]:
                errors += 1
                continue
        except httpx.HTTPError:
            errors += 1
            continue
        latencies.append(time.perf_counter() - started)
    return errors


async def probe(client: httpx.AsyncClient, stop: asyncio.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await client.get("/health")
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.25)


async def load(url: str, sessions: int, turns: int, time_limit: float) -> dict:
    limits = httpx.Limits(max_connections=sessions + 1, max_keepalive_connections=sessions + 1)
    latencies: list[float] = []
    health: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(client, stop, health))
        started = time.perf_counter()
        talks = [conversation(client, turns, latencies) for _ in range(sessions)]
        errors = await asyncio.wait_for(asyncio.gather(*talks), timeout=time_limit)
        elapsed = time.perf_counter() - started
        stop.set()
        await prober
    return {
        "messages": len(latencies),
        "errors": sum(errors),
        "seconds": round(elapsed, 1),
        "messages_per_second": round(len(latencies) / elapsed, 2),
        "latency_p50_s": round(percentile(latencies, 0.50), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "latency_max_s": round(max(latencies, default=0.0), 3),
        "latency_mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "health_p50_s": round(percentile(health, 0.50), 3),
        "health_p95_s": round(percentile(health, 0.95), 3),
        "health_max_s": round(max(health, default=0.0), 3),
    }


def serve(run: Path, scratch: Path, workers: int) -> tuple[subprocess.Popen, str, float]:
    """A `convrec serve` process on a free loopback port (its log in `scratch`), and the
    seconds from its start to its first answer (start-up: imports, loading the run)."""
    port = free_port()
    command = [sys.executable, "-m", "convrec", "serve", "--run", str(run), "--port", str(port)]
    command += ["--db", str(scratch / "sessions.sqlite"), "--workers", str(workers)]
    log = scratch / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    started = time.perf_counter()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return server, url, time.perf_counter() - started
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"serve did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--time-limit", type=float, default=900)
    parser.add_argument("--output", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()

    records = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as directory:
            scratch = Path(directory)
            database = scratch / "sessions.sqlite"
            server, url, startup = serve(args.run, scratch, workers)
            try:
                result = asyncio.run(load(url, args.sessions, args.turns, args.time_limit))
            finally:
                server.terminate()
                server.wait(timeout=60)
            store = SessionStore(database)
            stored = store.count_turns()
            store.close()
        result.update(
            startup_s=round(startup, 2),
            workers=workers,
            sessions=args.sessions,
            turns_per_session=args.turns,
            stored_turns=stored,
            lost_turns=2 * result["messages"] - stored,
        )
        print(json.dumps(result), flush=True)
        records.append(result)

    config = yaml.safe_load((args.run / "config.yaml").read_text())
    record = {
        "machine": describe_machine(),
        "run": args.run.name,
        "model": f"{config['model_name']} on {config['dataset']}",
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "results": records,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(record))


def markdown(record: dict) -> str:
    lines = [
        f"# convrec serve under load ({record['machine']})",
        "",
        f"Run `{record['run']}`; each row: a fresh server, concurrent sessions x turns.",
        "",
        "| workers | sessions x turns | messages/s | p50 s | p95 s | max s | /health p95 s "
        "| errors | stored turns | lost | start-up s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['workers']} | {r['sessions']} x {r['turns_per_session']} "
            f"| {r['messages_per_second']} | {r['latency_p50_s']} | {r['latency_p95_s']} "
            f"| {r['latency_max_s']} | {r['health_p95_s']} | {r['errors']} "
            f"| {r['stored_turns']} | {r['lost_turns']} | {r['startup_s']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
