"""The main processes of maniflow-rl running on this machine, so that ``runtime.torch_threads=
auto`` (``utils/threads.py``) can split the cores between them: a second experiment, a test, the
ranks of a ``torchrun`` job.

Each main process that installs a thread policy registers itself: one file named by its pid
in :func:`registry_dir` (``$MANIFLOW_THREAD_REGISTRY``, default
``<tempdir>/maniflow_rl-processes-<uid>``: the processes of one user), holding the process's
start time (``/proc/<pid>/stat``), so that a pid reused by an unrelated process is not
counted. :func:`live_processes` counts the registered processes still alive and deletes the
files of dead ones (a run killed with ``kill -9`` leaves its file behind). Processes in other
containers or of other users are not seen. Every failure to read or write the folder counts as
"this process alone" and is logged at debug level: the registry never stops a run.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Mapping

log = logging.getLogger("maniflow_rl")

REGISTRY_ENV = "MANIFLOW_THREAD_REGISTRY"


def registry_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$MANIFLOW_THREAD_REGISTRY``, else ``<tempdir>/maniflow_rl-processes-<uid>``."""
    env = os.environ if environ is None else environ
    if env.get(REGISTRY_ENV):
        return Path(env[REGISTRY_ENV])
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"maniflow_rl-processes-{uid}"


def start_token(stat_text: str) -> str:
    """The start time (field 22) of a ``/proc/<pid>/stat`` line; the command name (field 2)
    may hold spaces and parentheses, so fields are counted after its last ``)``."""
    fields = stat_text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def process_start_token(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot); "" where ``/proc`` is absent."""
    try:
        return start_token(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return ""


def is_alive(pid: int, token: str) -> bool:
    """Whether ``pid`` runs and, when ``token`` is known, is the process that registered."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, owned by someone else
        pass
    except OSError:
        return False
    return not token or process_start_token(pid) in ("", token)


def register(directory: Path, pid: int | None = None) -> Path | None:
    """Write this process's entry; returns its path (None if the folder is not writable)."""
    pid = os.getpid() if pid is None else pid
    path = Path(directory) / str(pid)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(process_start_token(pid))
    except OSError as exc:
        log.debug("thread registry %s not writable (%s); counting this process alone",
                  directory, exc)
        return None
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def live_processes(directory: Path) -> int:
    """Registered processes still alive (at least 1: this one); dead entries are deleted."""
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return 1
    alive = 0
    for entry in entries:
        try:
            pid, token = int(entry.name), entry.read_text().strip()
        except (ValueError, OSError):
            continue   # not ours, or removed meanwhile
        if is_alive(pid, token):
            alive += 1
        else:
            unregister(entry)
    return max(1, alive)
