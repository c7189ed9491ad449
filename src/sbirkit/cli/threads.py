"""How many threads the command line's torch (and FAISS) may use.

Two cores are easily oversubscribed: torch's default (one intra-op thread per core) beside another
busy job can run a small model 5-40x slower than one thread would (BENCHMARKS.md "Demo": the demo
took 560 s instead of 72 s beside one single-threaded job). So when the user has not said how many
threads to use, the ``sbirkit`` console script looks at how busy the cores it may run on are and
leaves the busy ones alone.

The rule, in order (docs/training.md "Devices and speed"):

1. ``sbirkit --threads N ...`` (or ``SBIRKIT_THREADS=N``): exactly N.
2. ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set: torch's own reading of them, unchanged.
3. Otherwise (the console script only, not :data:`~sbirkit.cli.app` called in-process): the cores
   this process may run on (``os.sched_getaffinity``) less the ones busy over a short sample of
   ``/proc/stat`` (0.2 s; the 1-minute load average where there is no ``/proc``), rounded, at
   least 1. On an idle machine that is torch's default, which is then left as it is.

Only the start is looked at: a job that starts beside a long run later is not noticed.
``sbirkit serve --workers N`` gives each worker process its share (1/N) of a count chosen by
rule 3; a count the user set is per process.
"""

from __future__ import annotations

import os
import sys
import time

#: seconds over which the busy cores are sampled
SAMPLE_SECONDS = 0.2

#: how this process's count was chosen: "flag" (--threads, SBIRKIT_THREADS), "environment"
#: (OMP/MKL_NUM_THREADS), "free cores" (rule 3 lowered it), "default" (rule 3 left torch's);
#: None when the CLI did not choose (``app`` called in-process)
source: str | None = None


def _affinity() -> set[int] | None:
    """The CPUs this process may run on; None where the OS has no affinity mask."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    cpus = _affinity()
    return max(1, len(cpus) if cpus else os.cpu_count() or 1)


def _cpu_times(cpus: set[int] | None) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over ``cpus`` from ``/proc/stat``; None without it."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
            values = [int(v) for v in rest.split()]
        except ValueError:
            continue
        if cpus is not None and index not in cpus:
            continue
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        # guest time is already counted in user/nice: the first eight fields are the total
        spent = sum(values[:8])
        busy += spent - idle
        total += spent
    return (busy, total) if total else None


def busy_cores(sample_seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of this process's cores other work keeps busy now: sampled from ``/proc/stat``
    over ``sample_seconds``, else the 1-minute load average; None when neither is available."""
    cpus = _affinity()
    first = _cpu_times(cpus)
    if first is not None:
        time.sleep(sample_seconds)
        second = _cpu_times(cpus)
        if second is not None and second[1] > first[1]:
            return usable_cores() * (second[0] - first[0]) / (second[1] - first[1])
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


def free_threads(cores: int, busy: float | None) -> int:
    """Threads for the cores left free: ``cores - busy`` rounded, at least 1, at most ``cores``
    (all of them when ``busy`` is unknown)."""
    if busy is None:
        return cores
    return max(1, min(cores, int(cores - busy + 0.5)))


def user_chose_threads(environ=None) -> bool:
    """Whether the environment (``os.environ`` by default) already fixes the thread count
    (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``), which torch reads itself."""
    environ = os.environ if environ is None else environ
    return any(environ.get(name, "").strip() for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))


def use_threads(threads: int) -> None:
    """Rule 1 above: exactly ``threads`` (``--threads``, ``SBIRKIT_THREADS``, ``serve --threads``)."""
    global source
    set_threads(threads)
    source = "flag"


def set_threads(threads: int) -> None:
    """Use ``threads`` torch intra-op threads, in FAISS too, and in child processes (``OMP_NUM_THREADS``,
    which also stops a child from choosing again)."""
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(threads)


def choose_threads_for_free_cores() -> int | None:
    """Rule 3 above: fewer torch threads when other work keeps some cores busy. Returns the count
    set, or None when torch's default was left (idle machine, or the environment chose)."""
    global source
    if user_chose_threads():
        source = "environment"
        return None
    import torch

    threads = free_threads(usable_cores(), busy_cores())
    if threads >= torch.get_num_threads():
        source = "default"
        return None
    set_threads(threads)
    source = "free cores"
    return threads


def per_worker(threads: int, workers: int) -> int:
    """Each of ``workers`` processes' share of ``threads``, at least 1."""
    return max(1, threads // max(1, workers))


def share_among_workers(workers: int) -> int | None:
    """For ``sbirkit serve --workers N``: when the count was chosen for this one process (rule 3,
    ``source`` "free cores" or "default"), give each worker process its share of it through
    ``OMP_NUM_THREADS`` (N workers of a full count each would oversubscribe the cores N times).
    A count the user chose (flag or environment) is per process and stays. Returns the share
    set, or None."""
    if workers <= 1 or source not in ("free cores", "default"):
        return None
    import torch

    share = per_worker(torch.get_num_threads(), workers)
    set_threads(share)
    return share
