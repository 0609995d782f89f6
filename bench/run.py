"""Benchmark entry point: ``python bench/run.py [--only NAME,...]`` (names: see ``ALL``).

Every measured variant runs in a fresh subprocess so that peak RSS belongs
to that variant alone; streamflow and the hand-written baseline alternate
order, and the median of the repeats is reported. The last lines are
machine-readable ``BENCH ...`` lines with PASS/FAIL against the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {"W": 0.95, "W0": 0.5}
OVERLOAD_TARGET = 1.2
CHILD_TIMEOUT = 600
ALL = ("W", "W0", "overload", "kafka", "kafka-paced", "classifier", "worker-start")


def _child(kind: str, workload: str, events: int | None, args: argparse.Namespace) -> None:
    if kind == "kafka-flow-worker":
        from bench.kafka_bench import run_flow_worker

        asyncio.run(run_flow_worker(args.broker, workload, args.pipeline, args.stage))
        return
    if kind == "kafka-hand-worker":
        from bench.kafka_bench import run_hand_worker

        topic_in, topic_out = args.topics.split(",")
        asyncio.run(
            run_hand_worker(
                args.broker, workload, topic_in, topic_out, args.pipeline, int(args.stage)
            )
        )
        return
    if kind.startswith("classifier-"):
        from bench.classifier_bench import run_classifier_child

        result = run_classifier_child(kind.removeprefix("classifier-"), workload or None)
        print("RESULT " + json.dumps(result), flush=True)
        return
    from bench.flow import run_streamflow
    from bench.handwritten import run_handwritten
    from bench.overload import run_overload
    from bench.workloads import WORKLOADS

    if kind == "overload":
        assert events is not None
        result = asyncio.run(run_overload(events))
    else:
        runner = run_streamflow if kind == "streamflow" else run_handwritten
        result = asyncio.run(runner(WORKLOADS[workload]))  # type: ignore[operator]
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def measure(kind: str, workload: str = "", events: int | None = None) -> dict[str, Any]:
    """Run one variant in a fresh interpreter and return its RESULT."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--workload", workload]
    if events is not None:
        argv += ["--events", str(events)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, cwd=ROOT, check=False, timeout=CHILD_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{kind} {workload} hung for {CHILD_TIMEOUT}s:\n{exc.stderr!r}") from exc
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(f"{kind} {workload} failed:\n{done.stdout}\n{done.stderr}")


def bench_workload(name: str, repeats: int) -> str:
    """Alternate streamflow and the baseline ``repeats`` times; return the BENCH line."""
    from bench.workloads import paired_runs, summarise, verdict

    def show(i: int, kind: str, r: dict[str, Any]) -> None:
        print(
            f"  {name} run {i} {kind:<11} eps={r['eps']:>9.0f} p50_ms={r['p50_ms']:7.1f} "
            f"p99_ms={r['p99_ms']:7.1f} rss_mb={r['rss_mb']:6.1f} events={r['events']}",
            flush=True,
        )

    flows, hands, ratios = paired_runs(repeats, lambda kind: measure(kind, name), show)
    ratio = statistics.median(ratios)
    target = TARGETS[name]
    print(
        f"  {name} median: streamflow {summarise(flows, 'eps'):.0f} ev/s, hand-written "
        f"{summarise(hands, 'eps'):.0f} ev/s (hand-written p99 "
        f"{summarise(hands, 'p99_ms'):.0f} ms, rss {summarise(hands, 'rss_mb'):.0f} MB)"
    )
    return (
        f"BENCH {name} ratio={ratio:.2f} eps={summarise(flows, 'eps'):.0f} "
        f"p99_ms={summarise(flows, 'p99_ms'):.0f} "
        f"rss_mb={summarise(flows, 'rss_mb'):.0f} "
        f"base_eps={summarise(hands, 'eps'):.0f} "
        f"base_p99_ms={summarise(hands, 'p99_ms'):.0f} "
        f"base_rss_mb={summarise(hands, 'rss_mb'):.0f} "
        f"target>={target} {verdict(ratio >= target)}"
    )


def bench_overload() -> str:
    """Offer 20k then 500k events to a ~20k/s pipeline; return the BENCH line."""
    from bench.overload import OVERLOAD_SIZES
    from bench.workloads import verdict

    small_n, large_n = OVERLOAD_SIZES
    small = measure("overload", events=small_n)
    large = measure("overload", events=large_n)
    for n, r in ((small_n, small), (large_n, large)):
        print(f"  overload {n} events: eps={r['eps']:.0f} rss_mb={r['rss_mb']:.1f}", flush=True)
    ratio = large["rss_mb"] / small["rss_mb"]
    return (
        f"BENCH overload rss_ratio={ratio:.2f} rss20k_mb={small['rss_mb']:.0f} "
        f"rss500k_mb={large['rss_mb']:.0f} target<={OVERLOAD_TARGET} "
        f"{verdict(ratio <= OVERLOAD_TARGET)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print their BENCH lines last."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(ALL), help="comma list of " + ",".join(ALL))
    parser.add_argument("--repeats", type=int, default=3, help="pairs per workload (median)")
    parser.add_argument(
        "--classifier-data",
        default=None,
        help="JSONL of text/label lines for the classifier case (default: generated tickets)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    for flag in ("--broker", "--pipeline", "--stage", "--topics"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.workload, args.events, args)
        return 0
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    lines: list[str] = []
    for name in chosen:
        print(f"== {name}", flush=True)
        if name in TARGETS:
            lines.append(bench_workload(name, args.repeats))
        elif name == "overload":
            lines.append(bench_overload())
        elif name == "kafka":
            from bench.kafka_bench import bench_kafka

            lines.extend(bench_kafka(args.repeats))
        elif name == "kafka-paced":
            from bench.kafka_bench import bench_kafka_paced

            lines.extend(bench_kafka_paced(args.repeats))
        elif name == "classifier":
            from bench.classifier_bench import bench_classifier

            lines.append(bench_classifier(args.repeats, args.classifier_data, measure))
        elif name == "worker-start":
            from bench.worker_start import bench_worker_start

            lines.append(bench_worker_start(args.repeats))
    print()
    for line in lines:
        print(line)
    return 0 if all(line.endswith("PASS") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
