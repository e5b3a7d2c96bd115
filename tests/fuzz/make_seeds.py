#!/usr/bin/env python3
"""Writes the binary seeds of corpus/fuzz_ring_records: record sequences laid out as bpf/events.h
says (a selector byte, 0 for a pl_event or 1 for a pl_sock_event, then the record), for a server
that binds, listens and serves one connection into TIME_WAIT, failed binds and connects, IPv6
and UDP. The text seeds of the other corpora are written by hand. Run from anywhere:
    python3 tests/fuzz/make_seeds.py
"""
import os
import socket
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_ring_records")

BIND, LISTEN, CONNECT, STATE, RESET, DESTROY = 1, 2, 3, 4, 5, 6
F_REQ_VALID, F_OPTS_VALID, F_TS_RECENT = 1, 4, 16
TCP, UDP = 6, 17
ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, \
    LISTEN_STATE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
NETNS = 4026531840


def addr(family, text):
    raw = socket.inet_pton(family, text)
    return raw.ljust(16, b"\0")


def endpoint(family, text, port):
    if text is None:
        return b"\0" * 24
    return addr(family, text) + struct.pack("<HHI", port, family, 0)


def opts(reuseaddr=0, reuseport=0, v6only=0):
    return struct.pack("<iBBBBBB2x", 0, reuseaddr, reuseport, v6only, 0, 0, 0)


def call(kind, ts, sk, ret, family=socket.AF_INET, proto=TCP, req=None, local=None, pid=4242,
         fd=3, backlog=0, enter_port=0, reuse=0, comm=b"server"):
    sock_type = 1 if proto == TCP else 2
    flags = F_OPTS_VALID | (F_REQ_VALID if req else 0)
    body = struct.pack("<QQIHHQIIIIiiiHHBBHI", ts, sk, NETNS, kind, family, 7, pid, pid, 1000,
                       1000, ret, fd, backlog, sock_type, proto, 0, 0, enter_port, flags)
    body += opts(reuseaddr=reuse)
    body += endpoint(family, *(req or (None, 0)))
    body += endpoint(family, *(local or (None, 0)))
    body += endpoint(family, None, 0)
    body += comm.ljust(16, b"\0") + b"\0" * 4
    assert len(body) == 176, len(body)
    return b"\x00" + body


def sock(kind, ts, sk, old, new, sport, dport, family=socket.AF_INET, src="127.0.0.1",
         dst="127.0.0.1", flags=0):
    body = struct.pack("<QQIHHHHBBHI", ts, sk, NETNS, kind, family, sport, dport, old, new, flags,
                       1000)
    body += opts()
    body += addr(family, src) + addr(family, dst)
    assert len(body) == 80, len(body)
    return b"\x01" + body


def write(name, records):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"".join(records))


def main():
    os.makedirs(OUT, exist_ok=True)
    lo = "127.0.0.1"
    write("server_connection_time_wait", [
        call(BIND, 1000, 0xA0, 0, req=(lo, 8080), local=(lo, 8080), reuse=1),
        call(LISTEN, 2000, 0xA0, 0, local=(lo, 8080), backlog=511),
        sock(STATE, 2100, 0xA0, CLOSE, LISTEN_STATE, 8080, 0),
        call(CONNECT, 3000, 0xB0, -115, req=(lo, 8080), local=(lo, 40000), comm=b"client"),
        sock(STATE, 3001, 0xB0, CLOSE, SYN_SENT, 40000, 8080),
        sock(STATE, 3002, 0xC0, LISTEN_STATE, SYN_RECV, 8080, 40000),
        sock(STATE, 3003, 0xB0, SYN_SENT, ESTABLISHED, 40000, 8080),
        sock(STATE, 3004, 0xC0, SYN_RECV, ESTABLISHED, 8080, 40000),
        sock(STATE, 4000, 0xB0, ESTABLISHED, FIN_WAIT1, 40000, 8080),
        sock(STATE, 4001, 0xC0, ESTABLISHED, CLOSE_WAIT, 8080, 40000),
        sock(STATE, 4002, 0xB0, FIN_WAIT1, FIN_WAIT2, 40000, 8080),
        sock(STATE, 4003, 0xC0, CLOSE_WAIT, LAST_ACK, 8080, 40000),
        sock(STATE, 4004, 0xB0, FIN_WAIT2, CLOSE, 40000, 8080, flags=F_TS_RECENT),
        sock(STATE, 4005, 0xC0, LAST_ACK, CLOSE, 8080, 40000),
        sock(DESTROY, 4006, 0xC0, CLOSE, CLOSE, 8080, 40000),
    ])
    write("failed_bind_and_connect", [
        call(BIND, 1000, 0xA0, 0, req=("0.0.0.0", 6379), local=("0.0.0.0", 6379)),
        call(LISTEN, 1001, 0xA0, 0, local=("0.0.0.0", 6379), backlog=128),
        call(BIND, 2000, 0xD0, -98, req=(lo, 6379), comm=b"redis-server"),
        call(BIND, 2001, 0xD1, -98, req=(lo, 6379), comm=b"redis\x1b[2J\n"),
        call(CONNECT, 3000, 0xE0, -99, req=("10.0.0.5", 6379), comm=b"client"),
        call(BIND, 3001, 0xE1, -22, req=None),
        sock(RESET, 3002, 0xA0, ESTABLISHED, ESTABLISHED, 6379, 50000),
    ])
    v6 = socket.AF_INET6
    write("ipv6_and_udp", [
        call(BIND, 1000, 0xA0, 0, family=v6, req=("::", 53), local=("::", 53), proto=UDP),
        call(BIND, 1001, 0xA1, -98, family=v6, req=("::1", 53), proto=UDP, comm=b"dnsmasq"),
        call(BIND, 1002, 0xA2, 0, family=v6, req=("::ffff:127.0.0.1", 9000),
             local=("::ffff:127.0.0.1", 9000)),
        call(CONNECT, 1003, 0xA3, 0, family=v6, req=("::1", 9000), local=("::1", 41000)),
        sock(STATE, 1004, 0xA3, CLOSE, SYN_SENT, 41000, 9000, family=v6, src="::1", dst="::1"),
        sock(STATE, 1005, 0xA3, SYN_SENT, CLOSE, 41000, 9000, family=v6, src="::1", dst="::1"),
    ])
    # Short, odd and unknown records: the decoder's refusals.
    write("malformed", [b"\x02" + b"\x05" * 2, b"\x03" + b"\xff" * 3,
                        call(7, 1, 1, 0)[:1] + call(7, 1, 1, 0)[1:],
                        sock(9, 1, 1, 0, 0, 1, 1)])


if __name__ == "__main__":
    main()
