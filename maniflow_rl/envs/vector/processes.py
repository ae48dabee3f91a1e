"""Multiprocessing backend of ``PointCloudEnvRunner`` (``env.backend=multiprocessing``, the
default): one worker process per block of envs, talked to over a ``multiprocessing.Pipe``.

* Workers use the ``spawn`` start method (a fork after a GL context exists can hang) and create
  their envs, hence their renderers, themselves (``env_group.worker_main``).
* ``call_all`` sends the command to every worker before collecting any reply, so the workers
  run concurrently.
* A worker that dies mid-conversation (killed, crashed) raises ``RuntimeError("env worker k
  died ...")`` naming its exit code: its envs are lost, the run resumes from its checkpoint.
  A command that fails inside a worker raises with the last line of the worker's traceback
  (the whole traceback goes to the debug log).
* Workers exit when the backend is closed, when the parent exits (daemon processes), or when
  the parent dies (their pipe reaches EOF). Each runs one thread (``utils/threads.py``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from typing import Any, Sequence

from maniflow_rl.envs.vector.env_group import worker_main
from maniflow_rl.utils.threads import worker_environment

log = logging.getLogger("maniflow_rl")


def worker_error_line(formatted_traceback: str) -> str:
    """The last line of a worker's traceback (``ExceptionType: message``): what the user needs;
    the whole traceback goes to the debug log (``maniflow-rl -v``)."""
    lines = [line.strip() for line in formatted_traceback.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


class ProcessEnvWorkers:
    """One worker process per block of envs; ``call`` / ``call_all`` over their pipes."""

    def __init__(self, task: str, env_kwargs: dict[str, Any], block_sizes: Sequence[int],
                 start_method: str = "spawn") -> None:
        self.procs: list[Any] = []
        self._conns: list[Any] = []
        ctx = mp.get_context(start_method)
        with worker_environment():   # one thread per worker (spawn copies os.environ)
            for size in block_sizes:
                parent_conn, child_conn = ctx.Pipe()
                proc = ctx.Process(target=worker_main, daemon=True,
                                   args=(child_conn, task, dict(env_kwargs), int(size)))
                proc.start()
                child_conn.close()
                self.procs.append(proc)
                self._conns.append(parent_conn)
        try:
            for k in range(len(self.procs)):
                self._receive(k)  # ready handshake (or the worker's construction error)
        except BaseException:
            self.close()
            raise

    def call(self, k: int, command: str, args: tuple) -> Any:
        self._send(k, (command, args))
        return self._receive(k)

    def call_all(self, command: str, args: Sequence[tuple]) -> list[Any]:
        for k, a in enumerate(args):
            self._send(k, (command, a))
        return [self._receive(k) for k in range(len(self._conns))]

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (OSError, BrokenPipeError):
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1)
        for conn in self._conns:
            conn.close()
        self._conns = []

    def _receive(self, k: int) -> Any:
        conn, proc = self._conns[k], self.procs[k]
        try:
            while not conn.poll(1.0):
                if not proc.is_alive():
                    raise self._worker_died(k)
            status, payload = conn.recv()
        except (EOFError, OSError) as exc:   # pipe closed / reset: the worker is gone
            raise self._worker_died(k) from exc
        if status == "error":
            log.debug("env worker %d traceback:\n%s", k, payload)
            raise RuntimeError(f"env worker {k} failed: {worker_error_line(payload)}")
        return payload

    def _worker_died(self, k: int) -> RuntimeError:
        """The error for a worker process that exited (killed, crashed) mid-conversation."""
        proc = self.procs[k]
        proc.join(timeout=1.0)
        return RuntimeError(f"env worker {k} died (exit code {proc.exitcode}); its envs "
                            f"are lost, restart the command to resume from the last checkpoint")

    def _send(self, k: int, message: tuple) -> None:
        try:
            self._conns[k].send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            raise self._worker_died(k) from exc
