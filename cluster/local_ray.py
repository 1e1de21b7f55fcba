"""Stop one local Ray head and everything it started, found by its temp dir (``make ray-down``); say
whether one runs, before ``make ray-up`` starts it.

    python -m cluster.local_ray down /tmp/rayfleet-1a2b3c4d
    python -m cluster.local_ray state /tmp/rayfleet-1a2b3c4d 6379 8265   # ours, ray:<port>, bound:<port> or free

``ray stop`` stops every Ray instance of the machine (test heads, other checkouts' heads); this
stops one. A process of the head names the temp dir in an option (gcs_server, raylet, the
dashboard, the monitors) or writes its output under it (the client server), and the rest of the
head descends from those (the dashboard and runtime-env agents, workers, job drivers, whose
command lines say nothing). All are listed before any is signalled (once the raylet is gone its
agents can no longer be traced to it), sent SIGTERM, and SIGKILL when still alive after a grace
period (the agents and the GCS ignore SIGTERM at times).
"""

from __future__ import annotations

import os
import sys
import time

import psutil

from cluster.local_s3 import listened_on

GRACE_S = 3.0
OUTPUT_FDS = ("1", "2")


def names_dir(arguments: list[str], temp_dir: str) -> bool:
    """Whether a command line names ``temp_dir`` (or a path under it) as an argument or an option's value."""
    for argument in arguments:
        value = argument.partition("=")[2] if argument.startswith("-") else argument
        if value == temp_dir or value.startswith(f"{temp_dir}/"):
            return True
    return False


def writes_under(pid: int, temp_dir: str) -> bool:
    """Whether the process's standard output or error is a file under ``temp_dir``."""
    for fd in OUTPUT_FDS:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"{temp_dir}/"):
                return True
        except OSError:
            continue
    return False


def head_processes(temp_dir: str) -> list[psutil.Process]:
    """The head's processes: those naming ``temp_dir`` or writing under it, and their descendants (never this
    process or its ancestors, whose command lines may name the folder)."""
    me = psutil.Process()
    excluded = {me.pid, *(parent.pid for parent in me.parents())}
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        if process.pid in excluded or process.pid in found:
            continue
        try:
            if not (names_dir(process.info["cmdline"] or [], temp_dir) or writes_under(process.pid, temp_dir)):
                continue
            family = [process, *process.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found.update((member.pid, member) for member in family if member.pid not in excluded)
    return list(found.values())


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie has ended: its parent, gone with the head, never reaps it)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            continue
    return running


def stop_head(temp_dir: str, grace_s: float = GRACE_S) -> tuple[int, int]:
    """Stop every process of the head whose temp dir is ``temp_dir``; returns how many there were and how many
    are still running."""
    temp_dir = os.path.abspath(temp_dir).rstrip("/")
    processes = alive(head_processes(temp_dir))
    found = len(processes)
    for signal_name in ("terminate", "kill"):
        for process in processes:
            try:
                getattr(process, signal_name)()  # psutil refuses a pid reused by another process
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        deadline = time.monotonic() + grace_s
        while alive(processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        processes = alive(processes) + [p for p in alive(head_processes(temp_dir)) if p not in processes]
        if not processes:
            break
    return found, len(processes)


def head_state(temp_dir: str, ports: list[int]) -> str:
    """``ours`` when a head with this temp dir runs; else, for the first of ``ports`` that already takes
    connections, ``ray:<port>`` when a Ray process listens there (a head started elsewhere) or
    ``bound:<port>`` for another program (``ray start`` would fail there after a minute, blaming itself);
    ``free`` when none does."""
    if alive(head_processes(os.path.abspath(temp_dir).rstrip("/"))):
        return "ours"
    for port in ports:
        if listened_on("127.0.0.1", port):
            return f"{'ray' if listener_is_ray(port) else 'bound'}:{port}"
    return "free"


def listener_is_ray(port: int) -> bool:
    """Whether the process listening on ``port`` is one of Ray's (its GCS, its dashboard); false when it
    cannot be told (another user's process)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return False
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            try:
                process = psutil.Process(connection.pid)
                return "ray" in process.name() or any("ray" in part for part in process.cmdline()[:3])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return False
    return False


def main(arguments: list[str]) -> None:
    if len(arguments) >= 3 and arguments[0] == "state":
        print(head_state(arguments[1], [int(port) for port in arguments[2:]]))
        return
    if len(arguments) != 2 or arguments[0] != "down":
        sys.exit(__doc__)
    temp_dir = arguments[1]
    found, left = stop_head(temp_dir)
    if left:
        sys.exit(f"{left} process(es) of the Ray head in {temp_dir} are still running after SIGKILL")
    print(
        f"stopped {found} process(es) of the Ray head in {temp_dir}"
        if found
        else f"no Ray head in {temp_dir} was running"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
