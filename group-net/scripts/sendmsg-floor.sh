#!/usr/bin/env bash
# The kernel's floor under a fan-out's writes: builds sendmsg-floor.c (a bare C sender, no server) and
# runs it for --rounds alternating rounds of three shapes, one frame (72 bytes), and 16 frames (1152
# bytes) as one slice and as 16, the size of a member's write in the 100-member flat-out comparison.
# Each line is the sender's system and user time per send (docs/benchmarks/FANOUT-LOG.md, "The floor under a write, measured bare").
#
# Usage: group-net/scripts/sendmsg-floor.sh [--rounds N] [--sends N]
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=3
sends=300000
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --sends) sends=$2; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "sendmsg-floor: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ && "$sends" =~ ^[1-9][0-9]*$ ]]; then
    echo "sendmsg-floor: --rounds and --sends take whole numbers of at least 1" >&2
    exit 2
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "sendmsg-floor: needs 2 CPUs (the sender on CPU 0, the reader on CPU 1)" >&2
    exit 2
fi
if ! command -v cc >/dev/null 2>&1; then
    echo "sendmsg-floor: needs a C compiler (Debian: apt-get install gcc)" >&2
    exit 2
fi

mkdir -p target
cc -O2 -Wall -Wextra -Werror -o target/sendmsg-floor group-net/scripts/sendmsg-floor.c
for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds"
    target/sendmsg-floor 1 "$sends" 72
    target/sendmsg-floor 1 "$sends" 1152
    target/sendmsg-floor 16 "$sends" 1152
done
