"""A WebSocket client written against docs/PROTOCOL.md alone, with Python's `websockets` package.

Usage: ws_client.py HOST:PORT. Two users say Hello, alice creates a group, bob joins with a message, alice
broadcasts, bob receives the entry; then a text message is refused with close code 1003. Exits non-zero on
any mismatch. Run by group-net/tests/python_ws.rs.
"""

import asyncio
import struct
import sys

import websockets


def frame(ver, cmd, payload=b""):
    return struct.pack(">BHI", ver, cmd, len(payload)) + payload


def parse(data):
    ver, cmd, status, length = struct.unpack(">BHBI", data[:8])
    assert len(data) == 8 + length, f"one whole frame per message, got {len(data)} bytes for {length}"
    return ver, cmd, status, data[8:]


async def hello(ws, uid):
    uid = uid.encode()
    await ws.send(frame(0, 4, bytes([len(uid)]) + uid + struct.pack(">H", 0)))
    ver, cmd, status, payload = parse(await ws.recv())
    assert (ver, cmd, status, len(payload)) == (0, 4, 1, 16), (ver, cmd, status, payload)


async def main(addr):
    url = f"ws://{addr}/"
    async with websockets.connect(url) as alice, websockets.connect(url) as bob:
        await hello(alice, "alice")
        await hello(bob, "bob")
        await alice.send(frame(1, 110, struct.pack(">BBHH", 0, 1, 60, 0)))
        _, cmd, status, group = parse(await alice.recv())
        assert (cmd, status, len(group)) == (110, 1, 52), (cmd, status, group)

        await bob.send(frame(1, 111, group + b"hello"))
        _, cmd, status, payload = parse(await bob.recv())
        assert (cmd, status, payload) == (111, 1, group)
        _, cmd, status, payload = parse(await alice.recv())
        assert (cmd, status) == (111, 0xFF)
        assert payload == group + bytes([3]) + b"bob" + b"hello", payload

        await alice.send(frame(1, 113, group + bytes([1]) + b"from python"))
        _, cmd, status, payload = parse(await bob.recv())
        assert (cmd, status) == (113, 0xFF)
        expected = group + bytes([5]) + b"alice" + struct.pack(">I", 11) + b"from python"
        assert payload == expected, payload

        # Join a group that does not exist: Bad, code 200, naming the group.
        missing = b"0" * 52
        await bob.send(frame(1, 111, missing))
        _, cmd, status, payload = parse(await bob.recv())
        code, gid_len = struct.unpack(">HB", payload[:3])
        assert (cmd, status, code, gid_len, payload[3:55]) == (111, 4, 200, 52, missing), payload

    async with websockets.connect(url) as rude:
        await rude.send("text is not the protocol")
        try:
            while True:
                await rude.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1003, closed
    print("python websockets client: ok")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), timeout=20))
