"""``python3 -m zctrace.workload``: run one workload in this process and print its result as JSON.

Opens the target itself (and always removes it), so a tracer can run this as a separate traced
program and compare its own counts with the kernel verdicts in the JSON. Exit status: 0 done,
1 the run failed (one line on stderr), 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict
from typing import NoReturn

from .senders import ENGINES, MODES, WorkloadSpec, compiled_engine, run_workload, validate
from .targets import PROTOS, TARGETS, open_target

PROG = "python3 -m zctrace.workload"
_MAIN_PID = os.getpid()


class _Parser(argparse.ArgumentParser):
    """Reports bad input as one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> _Parser:
    p = _Parser(prog=PROG, description="Run one zerocopy send workload and report the "
                "kernel's own verdicts as JSON.")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--proto", default="udp", choices=PROTOS)
    p.add_argument("--size", type=int, default=4000, help="bytes per send request")
    p.add_argument("--target", default="sink", choices=TARGETS)
    stop = p.add_mutually_exclusive_group(required=True)
    stop.add_argument("--duration", type=float, help="seconds to send for")
    stop.add_argument("--count", type=int, help="send requests to make")
    p.add_argument("--notify-batch", type=int, default=32,
                   help="msg_zerocopy: read the error queue every N sends")
    p.add_argument("--no-report-usage", dest="report_usage", action="store_false",
                   help="uring_zc*: do not ask the kernel whether data was copied")
    p.add_argument("--inflight", type=int, default=8, help="io_uring requests in flight")
    p.add_argument("--no-so-zerocopy", dest="so_zerocopy", action="store_false",
                   help="msg_zerocopy: send MSG_ZEROCOPY without SO_ZEROCOPY (kernel copies)")
    p.add_argument("--engine", default="c", choices=ENGINES,
                   help="send loops: c (the compiled engine, default) or python (its cross-check)")
    p.add_argument("--json", default="-", metavar="FILE|-", help="where to write (default -)")
    return p


def _terminate(signum: int, _frame: object) -> NoReturn:
    if os.getpid() != _MAIN_PID:  # a pyroute2 fork child being stopped: just go
        os._exit(128 + signum)
    raise KeyboardInterrupt  # unwind through open_target so the target is removed


def main(argv: list[str] | None = None) -> int:
    """Parse, run, write the JSON result; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    spec = WorkloadSpec(mode=args.mode, proto=args.proto, size=args.size, target=args.target,
                        duration=args.duration, count=args.count,
                        notify_batch=args.notify_batch, report_usage=args.report_usage,
                        inflight=args.inflight, so_zerocopy=args.so_zerocopy, engine=args.engine)
    try:
        validate(spec)
        if spec.engine == "c":
            compiled_engine()
        out = sys.stdout if args.json == "-" else open(args.json, "w")
    except (ValueError, OSError) as e:
        parser.error(str(e))
    signal.signal(signal.SIGTERM, _terminate)
    with out:
        try:
            with open_target(spec.target, spec.proto) as endpoint:
                result = run_workload(spec, endpoint)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except (OSError, RuntimeError) as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
        out.write(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
