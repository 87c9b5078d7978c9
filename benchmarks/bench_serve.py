"""`nnre serve` under concurrent text streams: continuous batching against one stream at a time.

Starts the real server (`python -m nnre serve`, a subprocess) twice, with batching and with
`--no-batching` (every stream stepped alone, interleaved), and drives each with aiohttp (or
httpx: `--client`; both HTTP/1.1, one connection per stream, every chunk parsed) at 1, 8,
32 and 128 concurrent streaming completions (`stream: true`, each slot sending requests back
to back for `--seconds`). Prints per level: aggregate characters/s (all characters received /
wall time), time per character p50/p99 over requests (from a request's first character to
its last, over the characters after the first: vLLM's TPOT), time to first character p50/p99
(request sent → first character received), characters per chunk, and the server's and this
client's CPU time per character (2 cores: the client competes with the server; on a shared
machine CPU per character is the steadier figure). First, the in-process cost of one step
and draw at 1 and 32 streams: the most batching alone can give. Then the ratios the issue
sets targets for:
aggregate throughput at 32 streams over 1 stream (≥ 10×), p99 time per character at 32
streams over 1 stream (≤ 3×), and batching over no batching per level.

The default model is samples/lighthouse.bundle: a character LSTM, H=128, V=51, float32.

Run: python benchmarks/bench_serve.py [--model M.bundle] [--levels 1,8,32,128]
     [--chars 500] [--seconds 3] [--port 8471] [--modes on,off] [--client aiohttp|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from timing import best_of

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stream:
    sent: float
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, characters)


def start_server(model: str, port: int, batching: bool, max_batch: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "nnre", "serve", model, "--port", str(port), "--log-level",
            "warning", "--max-batch", str(max_batch)]
    if not batching:
        args.append("--no-batching")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    while time.perf_counter() - start < 60:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: b\r\n\r\n")
                if b" 200 " in s.recv(200):
                    print(f"server {'with' if batching else 'without'} batching ready "
                          f"{time.perf_counter() - start:.2f} s after its start")
                    return proc
        except OSError:
            time.sleep(0.005)
    proc.kill()
    raise SystemExit("the server did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(client: httpx.AsyncClient | aiohttp.ClientSession, url: str, name: str,
              chars: int, seed: int) -> Stream:
    body = {"model": name, "prompt": "The ", "max_tokens": chars, "seed": seed,
            "stream": True}
    s = Stream(time.perf_counter())
    if isinstance(client, aiohttp.ClientSession):
        async with client.post(url, json=body) as r:
            r.raise_for_status()
            async for raw in r.content:  # one line at a time, as httpx's aiter_lines
                if raw.startswith(b"data: {"):
                    n = sum(len(c["text"]) for c in json.loads(raw[6:])["choices"])
                    if n:
                        s.arrivals.append((time.perf_counter(), n))
        return s
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                n = sum(len(c["text"]) for c in json.loads(line[6:])["choices"])
                if n:
                    s.arrivals.append((time.perf_counter(), n))
    return s


async def level(url: str, name: str, streams: int, chars: int, seconds: float,
                client: str = "aiohttp") -> tuple[list[Stream], float]:
    """Each slot its own client with one connection: httpx's shared pool is slow to hand out
    connections at 128 requests at once (seconds to a first character, on the client's side).
    aiohttp by default: the same HTTP/1.1 streaming for ~4× less client CPU per character
    (on 2 cores the client's CPU is taken from the server's)."""
    clients: list[httpx.AsyncClient | aiohttp.ClientSession] = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                              timeout=aiohttp.ClientTimeout(total=120))
        if client == "aiohttp" else httpx.AsyncClient(timeout=120) for _ in range(streams)]
    try:
        # warm-up: the connections, and the server's tapes at this batch size
        await asyncio.gather(*(one(c, url, name, 20, k) for k, c in enumerate(clients)))
        out: list[Stream] = []
        start = time.perf_counter()

        async def slot(k: int) -> None:
            seed = k * 100_000
            while time.perf_counter() - start < seconds:
                out.append(await one(clients[k], url, name, chars, seed))
                seed += 1

        await asyncio.gather(*(slot(k) for k in range(streams)))
        return out, time.perf_counter() - start
    finally:
        for c in clients:
            await (c.close() if isinstance(c, aiohttp.ClientSession) else c.aclose())


def summary(streams: list[Stream], wall: float) -> dict[str, float]:
    total = sum(n for s in streams for _, n in s.arrivals)
    first = [s.arrivals[0][0] - s.sent for s in streams if s.arrivals]
    per_char = []  # vLLM's TPOT: after the first character, time per character of a request
    for s in streams:
        chars = sum(n for _, n in s.arrivals)
        if chars > 1:
            per_char.append((s.arrivals[-1][0] - s.arrivals[0][0]) / (chars - 1))
    return {"chars_per_s": total / wall, "tpc_p50": np.percentile(per_char, 50),
            "tpc_p99": np.percentile(per_char, 99), "ttfc_p50": np.percentile(first, 50),
            "ttfc_p99": np.percentile(first, 99), "requests": len(streams),
            "chars_per_chunk": total / max(1, sum(len(s.arrivals) for s in streams))}


def step_cost(model_path: str, batch: int) -> float:
    """Seconds of one step of ``batch`` streams in the process, as the engine does it: one
    step of its stepper (``nnre.serve.steps``: the model's lean tape, the state left in its
    ring), then one draw for the rows (``nnre.draws.draw_rows``) with the bundle's sampling
    settings."""
    import nnre
    from nnre.codecs import Sampler, text_io
    from nnre.draws import draw_rows
    from nnre.serve.steps import steps_for

    model = nnre.load(model_path)
    io = text_io(model.metadata, list(model.inputs), list(model.outputs))
    settings = {k: v for k, v in model.sampling.items() if k != "greedy"}
    samplers = [Sampler(len(io.chars.vocab), seed=i, **settings) for i in range(batch)]
    stepper = steps_for(model, io.input, io.output)
    codes = [i % len(io.chars.vocab) for i in range(batch)]
    state = [model.zero_state(batch)]

    def step() -> None:
        probs, state[0] = stepper.step(codes, state[0])
        draw_rows(samplers, probs)

    return best_of(lambda: [step() for _ in range(100)], 5) / 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "samples" / "lighthouse.bundle"))
    ap.add_argument("--levels", default="1,8,32,128")
    ap.add_argument("--chars", type=int, default=500, help="max_tokens of each request")
    ap.add_argument("--seconds", type=float, default=3.0, help="per level and mode")
    ap.add_argument("--port", type=int, default=8471)
    ap.add_argument("--modes", default="on,off", help="batching on, off or both")
    ap.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    name = Path(args.model).name.removesuffix(".bundle")
    url = f"http://127.0.0.1:{args.port}/v1/completions"
    results: dict[tuple[bool, int], dict[str, float]] = {}
    print(f"model {name}; {args.chars} characters a request; {args.seconds:g} s per level; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.client} client")
    one, many = step_cost(args.model, 1), step_cost(args.model, 32)
    print(f"in-process step + draw: {one * 1e6:.0f} µs at 1 stream, {many * 1e6:.0f} µs at 32 "
          f"({many / 32 * 1e6:.1f} µs a character): batching alone can give at most "
          f"{32 * one / many:.1f}× the characters/s of one stream, and a stream at 32 gets a "
          f"character every {many / one:.1f}× as long")
    print(f"{'batching':>8} {'streams':>7} {'chars/s':>9} {'tpc p50':>9} {'tpc p99':>9} "
          f"{'ttfc p50':>9} {'ttfc p99':>9} {'chars/chunk':>11} {'srv µs/char':>11} "
          f"{'cli µs/char':>11}")
    for batching in [m == "on" for m in args.modes.split(",")]:
        proc = start_server(args.model, args.port, batching, max(levels))
        try:
            for streams in levels:
                srv0 = cpu_seconds(proc.pid)
                cli0 = resource.getrusage(resource.RUSAGE_SELF)
                got, wall = asyncio.run(level(url, name, streams, args.chars, args.seconds,
                                                   args.client))
                cli1 = resource.getrusage(resource.RUSAGE_SELF)
                r = results[batching, streams] = summary(got, wall)
                chars = r["chars_per_s"] * wall
                r["srv_cpu"] = (cpu_seconds(proc.pid) - srv0) / chars
                r["cli_cpu"] = (cli1.ru_utime + cli1.ru_stime - cli0.ru_utime
                                - cli0.ru_stime) / chars
                print(f"{'on' if batching else 'off':>8} {streams:>7} {r['chars_per_s']:>9,.0f} "
                      f"{r['tpc_p50'] * 1e3:>7.3f}ms {r['tpc_p99'] * 1e3:>7.3f}ms "
                      f"{r['ttfc_p50'] * 1e3:>7.2f}ms {r['ttfc_p99'] * 1e3:>7.2f}ms "
                      f"{r['chars_per_chunk']:>11.1f} {r['srv_cpu'] * 1e6:>11.1f} "
                      f"{r['cli_cpu'] * 1e6:>11.1f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    if (True, 1) in results and (True, 32) in results:
        one_, many = results[True, 1], results[True, 32]
        print(f"\nbatching on, 32 streams vs 1: aggregate throughput "
              f"{many['chars_per_s'] / one_['chars_per_s']:.1f}× (target ≥ 10×), p99 time per "
              f"character {many['tpc_p99'] / one_['tpc_p99']:.1f}× (target ≤ 3×); server CPU "
              f"per character {one_['srv_cpu'] / many['srv_cpu']:.1f}× less")
    for streams in levels:
        if (True, streams) in results and (False, streams) in results:
            gain = results[True, streams]["chars_per_s"] / results[False, streams]["chars_per_s"]
            print(f"{streams:>3} streams: batching on / off throughput {gain:.1f}×")


if __name__ == "__main__":
    main()
