#!/usr/bin/env python3
"""A UDP relay on loopback that delays and drops datagrams: UDP clients over a slower link than
loopback, where the kernel's netem is not available (a container, a VM without the module).

    udp-relay.py LISTEN_PORT SERVER_PORT DELAY_MS LOSS_PERCENT

Clients send to 127.0.0.1:LISTEN_PORT; each client address gets a socket of its own towards
127.0.0.1:SERVER_PORT, so the server sees one address per client. Every datagram is held DELAY_MS
each way (a round trip of twice that) and dropped with LOSS_PERCENT probability. Every 2 s it prints
the datagrams relayed each way ("up": to the server, "down": to the clients), those dropped, the KCP
data segments the server sent ("down_segments") and, of those, the ones it had sent before
("down_resent": the same sequence number to the same client again).
Python relays a few thousand datagrams a second: for tens of clients, not thousands.

Example (docs/benchmarks/FANOUT-LOG.md, eighteenth session):

    group-server --config udp.json &            # UDP on 127.0.0.1:17100
    udp-relay.py 17500 17100 20 0 &
    group-bench --transport udp --server 127.0.0.1:17500 --clients 50 --rate 4 --duration 10
"""
import asyncio
import collections
import random
import struct
import sys


def data_segments(datagram):
    """The sequence numbers of the KCP data segments (cmd 81) in a reliable datagram (channel 1)."""
    if len(datagram) < 5 or datagram[0] != 1:
        return []
    numbers, at = [], 5
    while at + 24 <= len(datagram):
        _conv, cmd, _frg, _wnd, _ts, sn, _una, length = struct.unpack_from('<IBBHIIII', datagram, at)
        if cmd == 81:
            numbers.append(sn)
        at += 24 + length
    return numbers


def main():
    listen = ('127.0.0.1', int(sys.argv[1]))
    server = ('127.0.0.1', int(sys.argv[2]))
    delay = float(sys.argv[3]) / 1000
    loss = float(sys.argv[4]) / 100
    counts = collections.Counter()
    upstreams = {}
    seen = collections.defaultdict(set)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    front = None

    class Upstream(asyncio.DatagramProtocol):
        def __init__(self, client):
            self.client = client

        def datagram_received(self, data, addr):
            counts['down'] += 1
            for sn in data_segments(data):
                counts['down_segments'] += 1
                if sn in seen[self.client]:
                    counts['down_resent'] += 1
                seen[self.client].add(sn)
            if random.random() < loss:
                counts['down_dropped'] += 1
                return
            loop.call_later(delay, front.sendto, data, self.client)

    class Front(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            nonlocal front
            front = transport

        def datagram_received(self, data, addr):
            counts['up'] += 1
            if random.random() < loss:
                counts['up_dropped'] += 1
                return
            upstream = upstreams.get(addr)
            if upstream is None:
                upstream = asyncio.ensure_future(loop.create_datagram_endpoint(
                    lambda: Upstream(addr), remote_addr=server))
                upstreams[addr] = upstream

            async def forward():
                transport, _ = await upstream
                await asyncio.sleep(delay)
                transport.sendto(data)
            asyncio.ensure_future(forward())

    async def report():
        while True:
            await asyncio.sleep(2)
            print(dict(counts), flush=True)

    loop.run_until_complete(loop.create_datagram_endpoint(Front, local_addr=listen))
    loop.create_task(report())
    loop.run_forever()


if __name__ == '__main__':
    main()
