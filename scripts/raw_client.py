#!/usr/bin/env python3
"""A raw monitor-protocol client in plain Python: subscribes, reports, prints the push.

Usage: python3 scripts/raw_client.py [HOST:PORT]   (default 127.0.0.1:9503)
It builds frames by hand (45-byte header: version, type, cipher, compress, length, CRC-32
of bytes 0..8, 33-byte uuid) exactly as docs/protocol.md describes.
"""
import json, socket, struct, sys, zlib

def frame(msg_type, uuid, body=b"", compress=False):
    if compress:
        body = zlib.compress(body)
    head = struct.pack("<BBBBI", 1, msg_type, 0, int(compress), 45 + len(body))
    return head + struct.pack("<I", zlib.crc32(head)) + uuid + body

def read_frame(sock):
    head = b""
    while len(head) < 45:
        chunk = sock.recv(45 - len(head))
        if not chunk:
            raise SystemExit("connection closed")
        head += chunk
    _, msg_type, cipher, compress, length, _ = struct.unpack("<BBBBII", head[:12])
    body = b""
    while len(body) < length - 45:
        body += sock.recv(length - 45 - len(body))
    return msg_type, json.loads(zlib.decompress(body) if compress else body)

host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9503").rsplit(":", 1)
sub = socket.create_connection((host, int(port)))
sub.sendall(frame(5, b"s" * 33, b'{"code":"demo","topics":["host.*"]}'))
print("subscribe ack:", read_frame(sub))
rep = socket.create_connection((host, int(port)))
rep.sendall(frame(7, b"r" * 33, b'{"code":"host.health","cpu":12.5}', compress=True))
print("report ack:   ", read_frame(rep))
print("push:         ", read_frame(sub))
rep.sendall(frame(3, b"r" * 33))
print("heartbeat:    ", read_frame(rep))
