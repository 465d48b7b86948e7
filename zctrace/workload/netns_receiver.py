"""The receiver of the netns target, a program of its own run inside the target's namespace:
`python netns_receiver.py NSFD PROTO ADDR PORT PARENT` joins the network namespace open on fd
NSFD, serves PROTO (udp or tcp) on ADDR:PORT, says "ready", then reads and discards until killed
(also when its parent PARENT dies). Only the standard library: it runs by path, not as a module."""

import ctypes
import os
import signal
import socket
import sys
import threading

_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000


def main(nsfd: int, proto: str, addr: str, port: int, parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(1)
    if libc.setns(nsfd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    tcp = proto == "tcp"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))

    def drain(s: socket.socket) -> None:
        buf = bytearray(1 << 16)
        while s.recv_into(buf) or not tcp:
            pass
        s.close()

    if tcp:
        sock.listen(8)
    print("ready", flush=True)
    if not tcp:
        drain(sock)
    while True:
        threading.Thread(target=drain, args=(sock.accept()[0],), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
