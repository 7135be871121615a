"""A flood of connections to ds01d's socket from a real Unix user (no tests here): a small
Python script run as the user (``runuser``, the installed venv's interpreter) raises its own
descriptor limit and opens the connections itself, so ds01d sees that user's uid on every
one of them (``SO_PEERCRED``). Modes: ``idle`` (connect, send nothing), ``longpoll`` (an
events long poll of ``seconds``, 10 s unless given, on each, through a hub when ``behalf``
names a user), ``nobody`` (a body that never arrives), ``slowloris`` (a head sent one byte a
second), ``churn`` (connect and close from several threads until released, for at most
``seconds``). Used by ``test_bypass_conn.py`` and ``test_bypass_hub.py``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ds01.model.hub import ON_BEHALF_HEADER
from support import BIN_DIR, user_env

#: The attacker, run as a user with the venv's Python (``ON_BEHALF_HEADER`` is defined
#: before it). argv: socket, mode, count, seconds, and the user it names in that header
#: (empty: none). Prints one JSON line when the attack is in place ("ready"), then, once its
#: stdin closes (or the attack ran its course), one JSON line with what it saw, and closes
#: everything.
ATTACKER = r"""
import json, resource, select, socket, sys, threading, time

SOCKET, MODE, COUNT, SECONDS = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
BEHALF = (ON_BEHALF_HEADER + ": " + sys.argv[5] + "\r\n").encode() if sys.argv[5] else b""
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(SOCKET)
    return sock


def readable(sock, wait):
    poller = select.poll()  # select() cannot watch descriptors above 1023
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(wait * 1000))


def answer_of(sock, wait):
    # What ds01d sent on sock within `wait` seconds: (status or None, error kind, closed).
    sock.setblocking(False)
    data, closed, end = b"", False, time.monotonic() + wait
    while time.monotonic() < end:
        if not readable(sock, max(0.0, end - time.monotonic())):
            break
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return parsed(data, closed)


def answers_of(socks, wait):
    # answer_of of each of socks, read together: what ds01d sent on each within the same
    # `wait` seconds (one after the other, each open one would take `wait` of its own).
    by_fd = {sock.fileno(): sock for sock in socks}
    data, closed = dict.fromkeys(by_fd, b""), set()
    poller = select.poll()
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock, select.POLLIN)
    end = time.monotonic() + wait
    while len(closed) < len(socks) and (left := end - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            try:
                chunk = by_fd[fd].recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if chunk:
                data[fd] += chunk
            else:
                closed.add(fd)
                poller.unregister(fd)
    return [parsed(data[sock.fileno()], sock.fileno() in closed) for sock in socks]


def parsed(data, closed):
    # An answer's bytes as (status or None, error kind, closed).
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None
    kind = None
    try:
        answer = json.loads(body)
        # ds01's shape names the kind; Docker's (the Docker API door's) has a message only.
        if "error" in answer:
            kind = answer["error"]["kind"]
        elif "message" in answer:
            kind = "docker"
    except Exception:
        pass
    return status, kind, closed


def tally(answers):
    counts = {}
    for status, kind, closed in answers:
        key = f"{status}:{kind}:{'closed' if closed else 'open'}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def report(**fields):
    print(json.dumps(fields), flush=True)


def wait_for_release():
    sys.stdin.read()


socks, errors = [], []
if MODE in ("idle", "longpoll", "nobody"):
    request = {
        "idle": b"",
        "longpoll": b"GET /v1/events?after_seq=4611686018427387904&wait=%d"
        b"&action=container.create HTTP/1.1\r\nHost: ds01d\r\n" % int(SECONDS or 10) + BEHALF
        + b"\r\n",
        "nobody": b"POST /v1/containers HTTP/1.1\r\nHost: ds01d\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    }[MODE]
    for _ in range(COUNT):
        try:
            sock = connect()
            if request:
                sock.sendall(request)
            socks.append(sock)
        except OSError as exc:
            errors.append(type(exc).__name__)
    time.sleep(1.0)  # the flood stands for a second before its answers are read
    answers = answers_of(socks, 0.05)
    report(ready=True, connected=len(socks), errors=errors, answers=tally(answers))
    if MODE == "nobody":  # let ds01d's read deadline pass
        report(answers=tally(answers_of(socks, SECONDS)))
    else:
        wait_for_release()
        report(answers=tally(answers_of(socks, 0.05)))
elif MODE == "slowloris":
    head = b"GET /v1/whoami HTTP/1.1\r\nHost: ds01d\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    for _ in range(COUNT):
        try:
            socks.append(connect())
        except OSError as exc:
            errors.append(type(exc).__name__)
    live = {s: 0 for s in socks}  # bytes sent so far
    outcome = {}
    started = time.monotonic()
    announced = False
    while live and time.monotonic() - started < SECONDS:
        for sock in list(live):
            sent = live[sock]
            try:
                sock.send(head[sent : sent + 1])
                live[sock] = sent + 1
            except OSError:
                outcome[sock] = answer_of(sock, 0.5) + (live.pop(sock),)
                continue
            if live[sock] >= len(head):
                outcome[sock] = ("complete", None, False, live.pop(sock))
                continue
            if readable(sock, 0):
                outcome[sock] = answer_of(sock, 0.5) + (live.pop(sock),)
        if not announced:
            report(ready=True, connected=len(socks), errors=errors)
            announced = True
        time.sleep(1.0)  # a slow client: one byte per connection a second
    for sock in live:
        outcome[sock] = ("still open", None, False, live[sock])
    done = [o for o in outcome.values()]
    report(
        answers=tally([o[:3] for o in done]),
        most_bytes_sent=max((o[3] for o in done), default=0),
        head_bytes=len(head),
    )
elif MODE == "churn":
    stop = time.monotonic() + SECONDS
    released = threading.Event()
    cycles = [0] * COUNT

    def churn(i):
        while not released.is_set() and time.monotonic() < stop:
            try:
                sock = connect()
                if cycles[i] % 3 == 1:
                    sock.send(b"GET /v1/whoami HTTP/1.1\r\nHost")
                elif cycles[i] % 3 == 2:
                    sock.send(b"POST /v1/containers HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
                sock.close()
            except OSError:
                pass
            cycles[i] += 1

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(COUNT)]
    for t in threads:
        t.start()
    report(ready=True)
    wait_for_release()  # the test's checks run meanwhile
    released.set()
    for t in threads:
        t.join()
    report(cycles=sum(cycles))
"""


class Attack:
    """An attacker process (bob's unless ``user`` says, naming ``behalf`` in the on-behalf
    header if given) on ds01d's API socket, or on ``socket_path`` if given: started, ready,
    released."""

    def __init__(
        self,
        d: Any,
        mode: str,
        count: int,
        seconds: float = 0.0,
        *,
        user: str = "bob",
        behalf: str = "",
        socket_path: Path | None = None,
    ) -> None:
        env = [f"{k}={v}" for k, v in user_env(user).items()]
        script = f"ON_BEHALF_HEADER = {ON_BEHALF_HEADER!r}\n{ATTACKER}"
        python = [str(BIN_DIR / "python"), "-I", "-c", script]
        args = [str(socket_path or d.paths.socket), mode, str(count), str(seconds), behalf]
        self.process = subprocess.Popen(
            ["runuser", "-u", user, "--", "env", "-i", *env, *python, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        self.ready = self._line()
        assert self.ready.get("ready"), self.ready

    def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            assert self.process.stderr is not None
            raise AssertionError(f"the attacker said nothing: {self.process.stderr.read()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def release(self, timeout: float = 120) -> dict[str, Any]:
        """Let go (close stdin), and return the attacker's last report."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        last = self._line()
        self.process.wait(timeout=timeout)
        return last

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # only the process this test started
            self.process.wait()


@contextmanager
def attack(
    d: Any,
    mode: str,
    count: int,
    seconds: float = 0.0,
    *,
    user: str = "bob",
    behalf: str = "",
    socket_path: Path | None = None,
) -> Iterator[Attack]:
    running = Attack(d, mode, count, seconds, user=user, behalf=behalf, socket_path=socket_path)
    try:
        yield running
    finally:
        running.kill()
