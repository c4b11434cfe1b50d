"""A Kafka broker that forbids creating topics, as ACLs do.

    python acl_proxy.py --listen PORT --upstream HOST:PORT

Forwards every request, byte for byte, to the broker behind it (which
must advertise this proxy's address, so that clients come back here),
except CreateTopics: that one it answers itself, every topic refused with
TOPIC_AUTHORIZATION_FAILED (29), the answer a broker gives a principal
without CREATE on the cluster. Prints "listening" once it accepts
connections, and one line per refused topic.

librdkafka asks CreateTopics in versions 0 to 4, none of them flexible, so
the request header is v1 and the response header v0.
"""

import argparse
import asyncio
import struct
import sys

CREATE_TOPICS = 19
TOPIC_AUTHORIZATION_FAILED = 29


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise ValueError("truncated request")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def array(self, item):
        n = self.i32()
        return [item() for _ in range(max(n, 0))]


def topic_names(r):
    """The topic names of a CreateTopics request v0-v4 body."""
    def topic():
        name = r.string()
        r.i32()  # num_partitions
        r.i16()  # replication_factor
        r.array(lambda: (r.i32(), r.array(r.i32)))  # assignments
        r.array(lambda: (r.string(), r.string()))  # configs
        return name
    return r.array(topic)


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def refusal(version, correlation_id, names):
    body = b""
    if version >= 2:
        body += struct.pack(">i", 0)  # throttle_time_ms
    body += struct.pack(">i", len(names))
    for name in names:
        body += string(name) + struct.pack(">h", TOPIC_AUTHORIZATION_FAILED)
        if version >= 1:
            body += string("Authorization failed.")
    frame = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(frame)) + frame


async def frames(reader):
    while True:
        head = await reader.readexactly(4)
        (size,) = struct.unpack(">i", head)
        yield head + await reader.readexactly(size)


async def serve(client_r, client_w, upstream):
    host, port = upstream.rsplit(":", 1)
    try:
        server_r, server_w = await asyncio.open_connection(host, int(port))
    except OSError:
        client_w.close()
        return
    lock = asyncio.Lock()

    async def to_client():
        try:
            async for frame in frames(server_r):
                async with lock:
                    client_w.write(frame)
                    await client_w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        client_w.close()

    back = asyncio.create_task(to_client())
    try:
        async for frame in frames(client_r):
            r = Reader(frame[4:])
            api_key, version, correlation_id = r.i16(), r.i16(), r.i32()
            if api_key != CREATE_TOPICS:
                server_w.write(frame)
                await server_w.drain()
                continue
            r.string()  # client_id
            names = topic_names(r)
            for name in names:
                print(f"refused {name}", flush=True)
            async with lock:
                client_w.write(refusal(version, correlation_id, names))
                await client_w.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    server_w.close()
    await back


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", required=True)
    a = p.parse_args()
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, a.upstream), "127.0.0.1", a.listen)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
