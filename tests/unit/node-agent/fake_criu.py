#!/usr/bin/env python3
"""A stand-in for `criu swrk FD` in the CRIU proxy's unit tests: serves one
restore the way CRIU's RPC does (setup-namespaces and post-restore
notifications, each waiting for the client's answer, then the restore's
response), or answers any other request with a bare response of its type.
Appends what it saw to $FAKE_CRIU_LOG."""
import os
import socket
import sys

RESTORE, NOTIFY = 2, 6


def log(line):
    with open(os.environ["FAKE_CRIU_LOG"], "a") as f:
        f.write(line + "\n")


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def resp(kind, success, script=None):
    msg = b"\x08" + varint(kind) + b"\x10" + (b"\x01" if success else b"\x00")
    if script is not None:
        notify = b"\x0a" + varint(len(script)) + script.encode() + b"\x10" + varint(4242)
        msg += b"\x2a" + varint(len(notify)) + notify
    return msg


def main():
    if sys.argv[1] != "swrk":
        log("args " + " ".join(sys.argv[1:]))
        return 0
    sk = socket.socket(fileno=int(sys.argv[2]))
    req = sk.recv(65536)
    kind = req[1]
    log("request %d" % kind)
    if kind != RESTORE:
        sk.send(resp(kind, True))
        return 0
    for script in ("setup-namespaces", "post-restore"):
        sk.send(resp(NOTIFY, True, script))
        answer = sk.recv(65536)
        ok = answer == b"\x08\x06\x18\x01"
        log("%s answered %s" % (script, "ok" if ok else "fail"))
        if not ok:
            sk.send(resp(RESTORE, False))
            return 1
    sk.send(resp(RESTORE, True))
    return 0


sys.exit(main())
