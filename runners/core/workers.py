"""Env worker processes: one env each, stepped by commands over a pipe.

A worker is a real process (spawned, so no GL context, OpenMP pool or lock is inherited from the
learner's process) that builds its env with `make_env` and answers `reset` / `step` commands, each
optionally with a render of the state after it (video frames). Observations are the env's own
pixels: the worker runs dm_control itself.

Failure modes, and what the parent sees:
- an exception inside the env: WorkerError carrying the worker's traceback's last line;
- the worker dies (segfault in the renderer, a kill, out of memory): WorkerError naming the exit
  code or signal, raised by the parent's next `recv` (it waits on the pipe and on the process
  together, so a dead worker never hangs the parent);
- the worker hangs (alive, but silent: a deadlocked driver, a stopped process): WorkerError once
  it has sent nothing for `answer_timeout()` seconds (TACO_WORKER_TIMEOUT, default 600); closing
  it then terminates it at once;
- the parent dies (even SIGKILL): the worker's next read of the pipe ends (EOF) and it exits;
- Ctrl-C reaches the whole process group: workers ignore SIGINT; the parent's cleanup (`close`)
  stops them, terminating any that do not answer in time.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
import types
from multiprocessing.connection import wait
from typing import Any


class WorkerError(RuntimeError):
    """An env worker failed or died; the message names it and how."""


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


TIMEOUT_VARIABLE = "TACO_WORKER_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


def answer_timeout() -> float | None:
    """Seconds a worker may go without answering before it counts as hung: TACO_WORKER_TIMEOUT
    (default 600; 0 waits forever). Read at each wait, so it can be changed between runs."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(
            f"{TIMEOUT_VARIABLE}={text!r}: expected the seconds a worker may stay silent, a number "
            f">= 0 (0 waits forever)"
        )
    return value or None


def time_left(since: float, limit: float | None) -> float | None:
    """Seconds (of time.monotonic) until `limit` after `since` is up, for `wait`; None: no limit."""
    return None if limit is None else max(0.0, since + limit - time.monotonic())


def overdue(since: float, limit: float | None) -> bool:
    return limit is not None and time.monotonic() - since >= limit


def silent_text(seconds: float | None) -> str:
    """What a worker silent for `seconds` (the limit that ran out) did; a wait without a limit never runs out."""
    if seconds is None:
        raise ValueError("silent_text needs the limit that ran out, got None (a wait without a limit never ends)")
    return f"sent nothing for {seconds:g} s (hung; {TIMEOUT_VARIABLE} sets this limit)"


def render_threads(count: int) -> int:
    """Mesa llvmpipe rasterizer threads for each of `count` processes rendering at once: the cores
    shared out among them, and 0 (each renders in its own thread, no hand-off to a pool) once that
    is a core or less each. llvmpipe's own default, a thread per core in every process, makes
    `count` processes on `cores()` cores fight over them; its pixels do not depend on the count."""
    share = cores() // max(count, 1)
    return share if share > 1 else 0


def share_render_cores(count: int) -> None:
    """In a worker, before its first GL context: limit llvmpipe to its share of the cores (see
    `render_threads`), unless the user set LP_NUM_THREADS. No effect on other GL drivers."""
    os.environ.setdefault("LP_NUM_THREADS", str(render_threads(count)))


def _serve(conn, task: str, seed: int | None, kwargs: dict[str, Any], siblings: int = 1) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this worker (close)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    share_render_cores(siblings)
    try:
        from taco_rl.envs import make_env

        env = make_env(task, seed, **kwargs)
        conn.send(("ok", (env.observation_space.shape, env.action_space.shape)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", _describe(e)))
        return
    while True:
        try:
            cmd, arg, render = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):  # the parent is gone
            break
        try:
            if cmd == "close":
                env.close()
                conn.send(("ok", None))
                break
            if cmd == "reset":
                out: tuple[Any, ...] = env.reset(seed=arg)
            elif cmd == "step":
                out = env.step(arg)
            elif cmd == "crash":  # tests: die the way a segfaulting renderer does
                os.kill(os.getpid(), signal.SIGSEGV)
                continue
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
            conn.send(("ok", (out, env.render() if render else None)))
        except (BrokenPipeError, EOFError):
            break
        except BaseException as e:  # noqa: BLE001
            try:
                conn.send(("error", _describe(e)))
            except (BrokenPipeError, OSError):
                break


def _describe(e: BaseException) -> str:
    last = traceback.format_exception_only(type(e), e)[-1].strip()
    return last


def exit_text(code: int | None) -> str:
    if code is None:
        return "is not answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@contextlib.contextmanager
def _main_not_rerun():
    """Start a spawned worker without it running the caller's main script again (multiprocessing's
    spawn does that so a target defined there can be found; the worker's target lives here), so a
    script that calls train() needs no `if __name__ == "__main__":` guard."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def spawn(target, args: tuple, name: str):
    """Start `target(conn, *args)` in a spawned daemon process: (process, the parent's end of the
    pipe). Only the worker holds the other end, so the parent's death reaches it as EOF."""
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), name=name, daemon=True)
    with _main_not_rerun():
        proc.start()
    child.close()
    return proc, conn


def terminate(proc) -> None:
    """SIGTERM, and SIGCONT after it: a stopped process would hold the SIGTERM until continued."""
    proc.terminate()
    with contextlib.suppress(ProcessLookupError, TypeError):
        os.kill(proc.pid, signal.SIGCONT)


def stop(proc, timeout: float = 5.0) -> None:
    """End a worker process: wait `timeout`, then terminate, then kill."""
    proc.join(timeout)
    if proc.is_alive():
        terminate(proc)
        proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()


class EnvWorker:
    """One env in its own process. `send(cmd, arg, render)` then `recv()`; `close()` always returns."""

    def __init__(self, task: str, seed: int | None, kwargs: dict[str, Any], name: str, siblings: int = 1) -> None:
        """`siblings`: how many workers (this one included) step at the same time, for its share
        of the cores (`render_threads`)."""
        self.name = name
        self.proc, self.conn = spawn(_serve, (task, seed, kwargs, siblings), name)
        self.spaces: tuple[Any, ...] | None = None
        self.sent_at = time.monotonic()  # when the command now awaited was sent (start-up: the spawn)
        self.hung = False

    def started(self) -> tuple:
        """Wait for the env to be built: (observation shape, action shape)."""
        if self.spaces is None:
            self.spaces = self.recv()
        return self.spaces

    def send(self, cmd: str, arg: Any = None, render: bool = False) -> None:
        try:
            self.conn.send((cmd, arg, render))
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise self.died() from None
        self.sent_at = time.monotonic()

    def waits(self) -> list:
        """What `multiprocessing.connection.wait` watches for this worker: its reply, its end."""
        return [self.conn, self.proc.sentinel]

    def recv(self) -> Any:
        limit = answer_timeout()
        ready = wait(self.waits(), time_left(self.sent_at, limit))
        if not ready:
            raise self.silent(limit)
        if self.conn in ready:  # read what it sent before it ended, if anything
            try:
                status, value = self.conn.recv()
            except (EOFError, ConnectionResetError, OSError):
                raise self.died() from None
            if status == "error":
                raise WorkerError(f"env worker {self.name}: {value}")
            return value
        raise self.died()

    def died(self) -> WorkerError:
        self.proc.join(timeout=5)
        return WorkerError(f"env worker {self.name} (pid {self.proc.pid}) {exit_text(self.proc.exitcode)}")

    def silent(self, limit: float | None) -> WorkerError:
        """The error for a worker that has been silent for `limit` seconds; `close` will not wait on it."""
        self.hung = True
        return WorkerError(f"env worker {self.name} (pid {self.proc.pid}) {silent_text(limit)}")

    def close(self, timeout: float = 5.0) -> None:
        """Close the env in the worker and end it; terminate (then kill) one that does not answer,
        at once if it was found hung."""
        if self.hung:
            timeout = min(timeout, 1.0)
        elif self.proc.is_alive():
            try:
                self.conn.send(("close", None, False))
                if wait(self.waits(), timeout):
                    self.conn.recv()
            except (BrokenPipeError, EOFError, ConnectionResetError, OSError):
                pass
        stop(self.proc, timeout)
        self.conn.close()


def start_workers(count: int, task: str, seed: int | None, kwargs: dict[str, Any], prefix: str) -> list[EnvWorker]:
    """`count` workers started together (their imports overlap), each waited for; on any failure
    every one is closed before the error is raised."""
    workers: list[EnvWorker] = []
    try:
        for i in range(count):
            workers.append(EnvWorker(task, seed, kwargs, f"{prefix}{i}", siblings=count))
        for w in workers:
            w.started()
    except BaseException:
        close_all(workers)
        raise
    return workers


def close_all(workers: list[EnvWorker]) -> None:
    for w in workers:
        w.close()
