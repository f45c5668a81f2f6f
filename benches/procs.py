"""Processes the benchmark starts and stops, and what /proc says about them (CPU, memory, sockets)."""

import os
import resource
import signal
import subprocess

import common
from common import HZ

STARTED = []  # Popen objects, each the leader of its own process group


def spawn(argv, name, env=None, stdout=None):
    """Start argv in a process group of its own, its output in WORK/<name>.log; env values of None unset."""
    out = stdout or open(os.path.join(common.WORK, f"{name}.log"), "ab")
    e = dict(os.environ)
    e.update(env or {})
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=e,
                         start_new_session=True, cwd=common.WORK)
    p.bench_name = name
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    # workers left behind by a reload (nginx, haproxy) are in the same group
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        try:
            stop(p, timeout=5)
        except Exception:
            pass


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    """pid and all its descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        x = todo.pop()
        out.append(x)
        todo.extend(kids.get(x, []))
    return out


def cpu_split(pids):
    """User and system CPU ticks summed over the processes."""
    u = k = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        u, k = u + int(fields[11]), k + int(fields[12])  # utime, stime (fields 14, 15)
    return u, k


def cpu_ticks(pids):
    return sum(cpu_split(pids))


def busy_ticks():
    """Machine-wide non-idle CPU ticks (all cores) from /proc/stat."""
    with open("/proc/stat") as f:
        c = [int(x) for x in f.readline().split()[1:]]
    return sum(c) - c[3] - c[4]  # minus idle and iowait


def own_ticks():
    """CPU ticks of this script and of the children it has waited for (wrk)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime) * HZ


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pids):
    return sum(status_kib(p, "VmRSS") for p in pids)


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def socket_inodes(pids):
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    l = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if l.startswith("socket:["):
                    inodes.add(l[8:-1])
        except OSError:
            pass
    return inodes


def established(pids, local_port=None, remote_port=None):
    """Established TCP connections owned by pids, by local or remote port."""
    inodes = socket_inodes(pids)
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    c = line.split()
                    if c[3] != "01" or c[9] not in inodes:
                        continue
                    lp = int(c[1].rsplit(":", 1)[1], 16)
                    rp = int(c[2].rsplit(":", 1)[1], 16)
                    if (local_port is None or lp == local_port) and (remote_port is None or rp == remote_port):
                        n += 1
        except OSError:
            pass
    return n
