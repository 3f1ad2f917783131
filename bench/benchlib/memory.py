"""Resident memory of processes, from /proc.

rss: VmRSS, what `ps`/`usersd status` show; it counts shared library pages (the same physical pages in every
usersd process) in full. anon: RssAnon, memory this process alone dirtied (heap, stacks). pss: the process's
share, shared pages divided by the number of processes mapping them."""
import threading
import time


def _kib_fields(path, names):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in names:
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def memory_of(pid):
    """{'rss_mib', 'anon_mib', 'pss_mib'} of one process (None values if it is gone)."""
    status = _kib_fields(f"/proc/{pid}/status", {"VmRSS", "RssAnon"})
    rollup = _kib_fields(f"/proc/{pid}/smaps_rollup", {"Pss"})
    mib = lambda kib: round(kib / 1024, 1) if kib is not None else None
    return {"rss_mib": mib(status.get("VmRSS")), "anon_mib": mib(status.get("RssAnon")),
            "pss_mib": mib(rollup.get("Pss"))}


def snapshot(pids):
    return {name: memory_of(pid) for name, pid in pids.items()}


class PeakSampler:
    """Samples the processes every `interval` s in a thread; `peak` is the largest value seen per process."""

    def __init__(self, pids, interval=0.2):
        self.pids, self.interval = pids, interval
        self.peak = {name: {} for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for name, values in snapshot(self.pids).items():
                for key, value in values.items():
                    if value is not None and value > self.peak[name].get(key, 0):
                        self.peak[name][key] = value
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
