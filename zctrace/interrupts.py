"""SIGINT and SIGTERM as requests to stop, honoured where stopping is safe.

The CLI calls `install()` first: from then on neither signal kills zctrace on the spot. A signal
is recorded; a command stops where it can (`check`, `wait`, `wait_child`), or runs a phase in
`raising()` where the first signal raises KeyboardInterrupt (a benchmark cell, top's screen).
`deferred()` holds that raise while bcc compiles, attaches or detaches programs (an exception in
there leaves programs bcc's exit hook then fails to detach, with a traceback) and raises at its
end. Later signals never raise: the report of an interrupted run is always written; a second
signal only cuts waits short (for a traced command to exit, for the last completions).
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent, e.g. the terminal's ^C to its process group
_STEP = 0.1  # seconds between checks in wait()
_TICK = 0.25  # seconds between the callers' periodic work in wait() and wait_child()

_received: list[int] = []  # stop signals, in arrival order
_raising = 0  # depth of raising() blocks
_held = 0  # depth of deferred() blocks
_raised = False  # the one KeyboardInterrupt has been raised


class Interrupted(Exception):
    """A stop request honoured before there was anything to report."""

    def __init__(self, signum: int, when: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} {when}")
        self.signum = signum


def _handler(signum: int, _frame: object) -> None:
    global _raised
    _received.append(signum)
    if _raising and not _held and not _raised:
        _raised = True
        raise KeyboardInterrupt


def install() -> Callable[[], None]:
    """Record SIGINT/SIGTERM from now on (a signal ignored at startup stays ignored); returns a
    function that puts the previous handlers back."""
    global _raised
    _received.clear()
    _raised = False
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s, handler in old.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, _handler)

    def restore() -> None:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    return restore


def received() -> int | None:
    """The first stop signal received, if any."""
    return _received[0] if _received else None


def exit_status(default: int = 130) -> int:
    """128 + the first signal received (`default` without one)."""
    return 128 + _received[0] if _received else default


def check(when: str) -> None:
    """Raise Interrupted if a stop signal has come (`when` says what had not happened yet)."""
    if _received:
        raise Interrupted(_received[0], when)


def count() -> int:
    """Stop signals received so far."""
    return len(_received)


def wait(seconds: float | None, since: int = 0, tick: Callable[[], object] | None = None) -> bool:
    """Sleep up to `seconds` (None: until a signal) unless more than `since` stop signals have
    come (before or during); True if they have. `tick` runs every _TICK seconds meanwhile."""
    deadline = None if seconds is None else time.monotonic() + seconds
    next_tick = time.monotonic() + _TICK
    while len(_received) <= since:
        left = _STEP if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(_STEP, left))
        if tick and time.monotonic() >= next_tick:
            tick()
            next_tick = time.monotonic() + _TICK
    return True


@contextmanager
def raising() -> Iterator[None]:
    """Inside, the first stop signal (or one already received) raises KeyboardInterrupt."""
    global _raising
    _raising += 1
    try:
        _raise_owed()
        yield
    finally:
        _raising -= 1


@contextmanager
def deferred() -> Iterator[None]:
    """Hold raising() for the block; a signal that came meanwhile raises at its end."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
    _raise_owed()


def _raise_owed() -> None:
    global _raised
    if _received and _raising and not _held and not _raised:
        _raised = True
        raise KeyboardInterrupt


def wait_child(pid: int, tick: Callable[[], object] | None = None) -> int | None:
    """Wait for child `pid`, forwarding stop signals to it (the terminal's ^C, which the child
    got from the terminal itself, is not sent twice). Returns its wait status, or None when a
    second stop signal came before it exited (stop waiting: the caller reports without it).
    `tick` runs every _TICK seconds meanwhile."""
    waited = {signal.SIGCHLD, *SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        for signum in _received:  # came between the probes' start and the block
            os.kill(pid, signum)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if len(_received) > 1:
                return None
            info = signal.sigtimedwait(waited, _TICK)
            if info is None and tick:
                tick()
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            _received.append(info.si_signo)
            if not (info.si_signo == signal.SIGINT and info.si_code == _SI_KERNEL):
                os.kill(pid, info.si_signo)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)


def default_in_child() -> None:
    """In a fork child before exec: stop signals do what they would do to the program it runs."""
    for s in SIGNALS:
        if signal.getsignal(s) is _handler:
            signal.signal(s, signal.SIG_DFL)
