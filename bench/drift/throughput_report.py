"""The lines bench/drift prints for the monitor's throughput and memory, and the two targets."""

from __future__ import annotations

from bench.drift.throughput import (
    EVENT_ROWS,
    FILL_RATE,
    FLAT_MEMORY_GROWTH,
    FULL_RUN_SECONDS,
    LAG_BOUND_SECONDS,
    MONITOR_CORE,
    OTHER_CORE,
    TARGET_RATE,
    WINDOW_ROWS,
    Sample,
    Throughput,
)

TABLE_ROWS = 20  # the steady run's table shows about this many samples (every sample is in the JSON)


def throughput_lines(result: Throughput) -> list[str]:
    top, steady, settings = result.top, result.steady, result.settings
    request_rows = settings["request_rows"]
    requests = EVENT_ROWS // request_rows
    where = (
        f"the monitor pinned to core {MONITOR_CORE}, producer and benchmark on core {OTHER_CORE}"
        if result.pinned
        else "NOT pinned (taskset or a second core missing): 'one core' is not what was measured"
    )
    lines = [
        f"the monitor from Kafka: prediction-logged events of {EVENT_ROWS:,} predictions "
        f"({requests:,} requests of {request_rows} row{'s' if request_rows > 1 else ''}, "
        f"{top.event_bytes / 1000:.0f} kB), 5 features (3 numeric, 2 categorical), windows of "
        f"{WINDOW_ROWS:,} rows; {where}",
        "",
        f"top rate: a backlog of {top.backlog_predictions:,} predictions "
        f"({settings['backlog_seconds']:.0f} s "
        f"at {FILL_RATE:,}/s, produced at {top.fill_predictions_per_second:,.0f}/s); first commit "
        f"{top.to_first_commit_seconds:.1f} s after the monitor's start",
        f"  {top.predictions_per_second:,.0f} predictions/s over {top.measured_seconds:.1f} s "
        f"({top.measured_predictions:,} predictions, after a warm-up of {top.warmup_predictions:,} in "
        f"{top.warmup_seconds:.0f} s; "
        f"{'the backlog drained: at least this' if top.drained else 'backlog left'})",
        f"  per {5:.0f} s: {', '.join(f'{rate:,.0f}' for rate in top.slices)}",
        f"  the monitor used {_share(top.monitor_cpu_share)} of one core; core {MONITOR_CORE} was "
        f"{_share(top.core_busy_share)} busy (anyone's work); "
        + (
            f"{top.per_cpu_second:,.0f} predictions per CPU-second of the monitor"
            if top.per_cpu_second
            else "its CPU time unknown"
        ),
        f"  the monitor's own count: {_counted(top.counted)}",
    ]
    if top.profile:
        if top.profiled_predictions_per_second is not None:
            lines.append(
                f"  where the monitor's time goes (py-spy, {top.profiled_predictions_per_second:,.0f} "
                "predictions/s while sampled):"
            )
        lines += [f"    {line}" for line in top.profile]
    lines += [
        "",
        f"steady run: {steady.rate:,} predictions/s asked for {steady.seconds:.0f} s; the producer sent "
        f"{steady.produced_per_second:,.0f}/s (at most {steady.producer['max_behind_seconds']:.2f} s behind "
        f"its schedule); the monitor's RSS {steady.idle_rss_mb:.1f} MB before",
        f"{'time (s)':>9}{'produced':>12}{'committed':>12}{'lag':>10}{'lag (s)':>9}{'RSS (MB)':>10}"
        f"{'CPU':>6}{'core ' + str(MONITOR_CORE):>8}",
    ]
    lines += [_row(sample, steady.rate) for sample in _shown(steady.samples)]
    drained = (
        f"drained {steady.drain_seconds:.1f} s after the producer stopped"
        if steady.drain_seconds is not None
        else "NOT drained within a minute of the producer's end"
    )
    lines += [
        f"  memory after {steady.warmup_seconds:.0f} s of warm-up: first third's largest RSS "
        f"{steady.first_third_rss_mb:.1f} MB, last third's {steady.last_third_rss_mb:.1f} MB "
        f"({steady.rss_growth:+.1%}; {steady.rss_mb_per_minute:+.2f} MB a minute): "
        f"{'flat' if steady.memory_flat else 'GROWING'} (within {FLAT_MEMORY_GROWTH:.0%})",
        f"  lag: the last third's largest {steady.last_third_max_lag:,} predictions "
        f"({steady.last_third_max_lag / steady.rate:.1f} s of traffic); {drained}: "
        f"{'bounded' if steady.lag_bounded else 'NOT bounded'} (under {LAG_BOUND_SECONDS:.0f} s of traffic)",
        f"  the monitor's CPU after the warm-up: {_share(steady.mean_cpu_share)} of one core on average, "
        f"{_share(steady.last_third_cpu_share)} in the last third: "
        + (
            f"{steady.per_cpu_second:,.0f} predictions per CPU-second (its rate on a core of its own)"
            if steady.per_cpu_second
            else "its CPU time unknown"
        ),
        f"  the monitor's own count: {_counted(steady.counted)}",
        "",
        "targets (issue 7):",
        f"  >= {TARGET_RATE:,} predictions/s on one core: {top.predictions_per_second:,.0f}"
        f"{'' if result.pinned else ' (not pinned)'}  {'PASS' if result.rate_met else 'MISS'}",
        f"  memory flat over a {FULL_RUN_SECONDS // 60}-minute run at {steady.rate:,}/s (lag bounded): "
        + (
            f"{steady.rss_growth:+.1%} over {steady.seconds:.0f} s  {'PASS' if result.memory_met else 'MISS'}"
            if result.full_length
            else f"{steady.rss_growth:+.1%} over {steady.seconds:.0f} s: NOT JUDGED (shorter than "
            f"{FULL_RUN_SECONDS} s)"
        ),
    ]
    return lines


def _shown(samples: list[Sample]) -> list[Sample]:
    every = max(1, -(-len(samples) // TABLE_ROWS))
    shown = samples[::every]
    return shown if not samples or shown[-1] is samples[-1] else [*shown, samples[-1]]


def _row(sample: Sample, rate: int) -> str:
    return (
        f"{sample.seconds:>9.0f}{sample.produced:>12,}{sample.committed:>12,}{sample.lag:>10,}"
        f"{sample.lag / rate:>9.1f}{sample.rss_mb:>10.1f}{_share(sample.cpu_share):>6}"
        f"{_share(sample.core_busy_share):>8}"
    )


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def _counted(counts: dict[str, float]) -> str:
    if not counts:
        return "nothing"
    return ", ".join(f"{name.replace('_', ' ')} {value:,.0f}" for name, value in sorted(counts.items()))
