#!/usr/bin/env bash
# Reproduces docs/BENCHMARKS.md's fan-out comparison in one command: starts a group-server, and a
# redis-server and a nats-server when they are installed, each on a free loopback port; runs group-bench
# against them in turn (group, redis, nats, then again, for --rounds rounds) for every load; prints a
# progress line per run and a table of ratios to redis and nats from the same round; stops the servers.
#
# Usage: group-net/scripts/compare-fanout.sh [--rounds N] [--duration S] [--loads "CLIENTS:RATE ..."]
#                                            [--profile release|dev] [--out FILE] [--pin]
#                                            [--count-writes] [--workers N]
# A load is members:rate, rate 0 meaning flat out (group-bench's window of 32). --pin runs the servers
# on the first CPU and group-bench on the others (taskset), as in production, where the clients are not on
# the server's machine; without it they share every CPU. --count-writes counts each server's write
# syscalls over each run with perf (group-bench --count-writes; needs perf and root) and adds
# deliveries per write to the tables. --workers N starts group-server with N runtime workers (default:
# its own, one per CPU it may use). Machines are noisy: compare within a round, never across runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=3
duration=6
loads="1000:0 100:0 1000:1000 1000:100"
profile=release
out=target/compare-fanout.jsonl
pin=false
count_writes=()
workers=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --loads) loads=$2; shift 2 ;;
        --profile) profile=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --pin) pin=true; shift ;;
        --count-writes) count_writes=(--count-writes); shift ;;
        --workers) workers=(--workers "$2"); shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare-fanout: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in
    release) bin=target/release ;;
    dev) bin=target/debug ;;
    *) echo "compare-fanout: --profile must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ && "$duration" =~ ^[1-9][0-9]*$ ]]; then
    echo "compare-fanout: --rounds and --duration take whole numbers of at least 1" >&2
    exit 2
fi
for load in $loads; do
    if ! [[ "$load" =~ ^[0-9]+:[0-9]+$ ]]; then
        echo "compare-fanout: a load is MEMBERS:RATE (e.g. 1000:0), not '$load'" >&2
        exit 2
    fi
done

if ! command -v python3 >/dev/null 2>&1; then
    echo "compare-fanout: needs python3 (to pick free ports and read group-bench's JSON)" >&2
    exit 2
fi

# The servers' and the bench's CPUs: every CPU this script may use for both, or with --pin the first of
# them for the servers and the others for the bench.
server_cpus=()
bench_cpus=()
if [ "$pin" = true ]; then
    if ! command -v taskset >/dev/null 2>&1; then
        echo "compare-fanout: --pin needs taskset (Debian: apt-get install util-linux)" >&2
        exit 2
    fi
    read -r first rest < <(python3 -c 'import os; c = sorted(os.sched_getaffinity(0)); print(c[0], ",".join(map(str, c[1:])))')
    if [ -z "${rest:-}" ]; then
        echo "compare-fanout: --pin needs at least 2 CPUs, this process may use only CPU $first" >&2
        exit 2
    fi
    server_cpus=(taskset -c "$first")
    bench_cpus=(taskset -c "$rest")
fi

echo "building group-server and group-bench ($profile)"
if [ "$profile" = dev ]; then
    echo "(a dev build checks that the comparison runs; its figures say nothing about performance)"
fi
cargo build --quiet --locked --profile "$profile" -p group-net --bin group-server --bin group-bench

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something accepts connections on 127.0.0.1:$1 (10 s at most).
wait_for_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "compare-fanout: $2 did not listen on 127.0.0.1:$1 within 10 s" >&2
    return 1
}

# One publisher flat out needs more than the default per-connection request and byte rates.
cat >"$work/group.json" <<EOF
{"server": {"tcp": "127.0.0.1:$(free_port)", "ws": null, "udp": null},
 "mesh": {"bind": "127.0.0.1:$(free_port)"},
 "limits": {"maxRequestsPerSecond": 10000000, "maxInboundBytesPerSecond": 1073741824,
            "connectionTtl": 600}}
EOF
group_port=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["server"]["tcp"].split(":")[1])' "$work/group.json")
echo "group-server workers: ${workers[1]:-one per CPU it may use}"
RUST_LOG=error "${server_cpus[@]}" "$bin/group-server" --config "$work/group.json" "${workers[@]}" >"$work/group.log" 2>&1 &
pids+=($!)
targets=("group 127.0.0.1:$group_port $!")
wait_for_port "$group_port" group-server

if command -v redis-server >/dev/null 2>&1; then
    port=$(free_port)
    "${server_cpus[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
    pids+=($!)
    targets+=("redis 127.0.0.1:$port $!")
    wait_for_port "$port" redis-server
else
    echo "redis-server is not installed: no redis column (Debian: apt-get install redis-server)"
fi
if command -v nats-server >/dev/null 2>&1; then
    port=$(free_port)
    "${server_cpus[@]}" nats-server -a 127.0.0.1 -p "$port" >"$work/nats.log" 2>&1 &
    pids+=($!)
    targets+=("nats 127.0.0.1:$port $!")
    wait_for_port "$port" nats-server
else
    echo "nats-server is not installed: no nats column (Debian: apt-get install nats-server)"
fi

mkdir -p "$(dirname "$out")"
: >"$out"
runs=$(( $(wc -w <<<"$loads") * rounds * ${#targets[@]} ))
run=0
for load in $loads; do
    clients=${load%%:*}
    rate=${load##*:}
    for round in $(seq 1 "$rounds"); do
        for target in "${targets[@]}"; do
            read -r name addr pid <<<"$target"
            run=$((run + 1))
            printf '[%d/%d] %s members, rate %s, round %d: %s ... ' "$run" "$runs" "$clients" "$rate" "$round" "$name"
            if ! line=$("${bench_cpus[@]}" "$bin/group-bench" --target "$name" --server "$addr" --server-pid "$pid" \
                --clients "$clients" --rate "$rate" --duration "$duration" "${count_writes[@]}" \
                2>"$work/bench.err" | grep '^{'); then
                echo "failed"
                tail -n 5 "$work/bench.err" >&2
                exit 1
            fi
            # Appends the run (with its round) to $out and prints its headline figures.
            python3 - "$line" "$round" "$out" "$pin" <<'EOF'
import json, sys
run = json.loads(sys.argv[1])
run["round"] = int(sys.argv[2])
run["pinned"] = sys.argv[4] == "true"
with open(sys.argv[3], "a") as out:
    out.write(json.dumps(run) + "\n")
per_write = run.get("deliveries_per_server_write")
print("%.0fk/s, server at %.0f%% of a core, %.0fk per core-second, p99 %.1f ms%s" % (
    run["deliveries_per_second"] / 1e3,
    run.get("server_cpu_percent") or 0,
    run["deliveries_per_server_core_second"] / 1e3,
    run["latency_us"]["p99"] / 1000,
    "" if per_write is None else ", %.1f deliveries per write" % per_write))
EOF
        done
    done
done

echo
echo "all runs, one JSON line each: $out"
python3 - "$out" <<'EOF'
import json, sys
from collections import defaultdict

runs = [json.loads(line) for line in open(sys.argv[1])]
by_load = defaultdict(lambda: defaultdict(dict))
for r in runs:
    load = (r["clients"], r["rate_per_sender"])
    by_load[load][r["round"]][r["target"]] = r
peers = [p for p in ("redis", "nats") if any(r["target"] == p for r in runs)]
writes = any(r.get("deliveries_per_server_write") is not None for r in runs)
for (clients, rate), rounds in by_load.items():
    shape = "flat out" if rate == 0 else f"{rate:g} msg/s"
    pinned = ", servers on one CPU and the bench on the others" if runs[0].get("pinned") else ""
    print(f"\n{clients} members, 64 B, {shape}{pinned}")
    head = "| round | server | deliveries/s | server CPU % | per core-second | p50 ms | p99 ms | delivered |"
    if writes:
        head += " deliveries per write |"
    print(head + "".join(f" group / {p} per core-second |" for p in peers))
    print("|" + "---|" * (head.count("|") - 1 + len(peers)))
    ratios, p99s = defaultdict(list), defaultdict(list)
    for number, targets in sorted(rounds.items()):
        for name, r in targets.items():
            cells = ""
            for p in peers:
                group, peer = targets.get("group"), targets.get(p)
                if name == "group" and peer and peer["deliveries_per_server_core_second"] > 0:
                    ratio = group["deliveries_per_server_core_second"] / peer["deliveries_per_server_core_second"]
                    ratios[p].append(ratio)
                    p99s[p].append(group["latency_us"]["p99"] / max(peer["latency_us"]["p99"], 1))
                    cells += f" {ratio:.2f} |"
                else:
                    cells += " |"
            print(f"| {number} | {name} | {r['deliveries_per_second'] / 1e3:.0f}k "
                  f"| {r.get('server_cpu_percent') or 0:.0f} "
                  f"| {r['deliveries_per_server_core_second'] / 1e3:.0f}k "
                  f"| {r['latency_us']['p50'] / 1000:.1f} | {r['latency_us']['p99'] / 1000:.1f} "
                  f"| {r['deliveries']} of {r['expected_deliveries']} |"
                  + (f" {r.get('deliveries_per_server_write') or 0:.1f} |" if writes else "")
                  + cells)
    for p, found in ratios.items():
        print(f"group / {p}: per core-second {min(found):.2f}-{max(found):.2f}, "
              f"p99 {min(p99s[p]):.2f}-{max(p99s[p]):.2f}, over {len(found)} round(s)")
EOF
