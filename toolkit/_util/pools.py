"""Process pools that outlive a dead worker: what the sweep, the suite and the dose study share.

A worker killed from outside (the OOM killer, a signal) breaks the whole
`ProcessPoolExecutor`: every job still in it fails with `BrokenProcessPool`. `run_in_pools`
starts a new pool for the jobs left (they resume from what they had written); after a second
break each job goes alone, so only the job that kills its worker is given up, with `DIED` as
its reason. Workers die with the process that started them (`die_with_parent`).
"""
from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process  # noqa: F401  (cf.process.BrokenProcessPool)
import multiprocessing as mp
import os
from typing import Any, Callable

DIED = ("its worker process died (killed by a signal, e.g. the OOM killer, or out of memory); "
        "rerun to resume it from its last completed round")


def check_workers(workers, option: str = "workers") -> None:
    """None (the default count) or an integer >= 1; 0 is refused, not read as "the default"."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        from toolkit.errors import ConfigError

        raise ConfigError(f"{option} must be an integer >= 1, got {workers!r}")


def die_with_parent(parent: int | None = None) -> None:
    """Pool worker initializer: on Linux, ask the kernel to SIGTERM this worker when the
    process that started it dies (even by SIGKILL), so a killed sweep leaves no orphans
    finishing runs behind a rerun's back. A worker killed mid-round resumes later from its
    last completed round. Elsewhere a no-op (the run locks still stop two writers)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent:  # it died before the call: do not outlive it
            os.kill(os.getpid(), signal.SIGTERM)


def thread_lock_for_bars() -> None:
    """tqdm makes a multiprocessing lock (a named POSIX semaphore) in every process that makes a
    bar, even a disabled one. A worker that is killed never unlinks it, and Python then warns
    "leaked semaphore objects" when the parent exits. A worker's bars are its own, so a thread
    lock serves."""
    import threading

    try:
        from tqdm import tqdm
    except ImportError:  # no bars, no lock
        return
    tqdm.set_lock(threading.RLock())


def init_worker(parent: int | None = None) -> None:
    """The default pool worker initializer: `die_with_parent` and `thread_lock_for_bars`."""
    die_with_parent(parent)
    thread_lock_for_bars()


def spawn_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of `workers` spawned processes that die with this one."""
    return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                                  initargs=(os.getpid(),))


def run_in_pools(jobs: dict[str, tuple], fn: Callable, workers: int, *, on_done: Callable[[str, Any], None],
                 note: Callable[[str], None], what: str = "runs",
                 pool: Callable[[int], cf.Executor] = spawn_pool) -> dict[str, str]:
    """Run `fn(*jobs[key])` for every key in process pools of `workers` (`pool(n)` makes one),
    calling `on_done(key, result)` in this process as each returns. A job that raises stops
    everything (its exception propagates). A dead worker does not: the jobs not yet done go to
    a new pool (`note` says so), and after a second break each goes alone, so only a job whose
    own worker dies is given up. Returns {key: reason} of the jobs given up (also noted)."""
    remaining, breaks, done, dead = list(jobs), 0, set(), {}
    while remaining:
        alone = breaks >= 2
        for batch in ([[k] for k in remaining] if alone else [remaining]):
            try:
                _one_pool(batch, jobs, fn, 1 if alone else workers, pool, done, on_done)
            except cf.process.BrokenProcessPool:
                if alone:
                    dead[batch[0]] = DIED
                    note(f"{batch[0]} failed: {DIED}")
                else:
                    breaks += 1
                    note(f"a worker process died; {sum(k not in done for k in remaining)} {what} restart in a "
                         f"new pool and resume from their last completed round")
        remaining = [] if alone else [k for k in remaining if k not in done]
    return dead


def _one_pool(keys: list[str], jobs: dict, fn: Callable, workers: int, pool: Callable[[int], cf.Executor],
              done: set, on_done: Callable[[str, Any], None]) -> None:
    """One pool over `keys`; the jobs that returned are recorded even when the pool breaks,
    and then BrokenProcessPool propagates."""
    broken = None
    with pool(workers) as executor:
        futures = {executor.submit(fn, *jobs[k]): k for k in keys}
        for fut in cf.as_completed(futures):
            try:
                result = fut.result()
            except cf.process.BrokenProcessPool as err:
                broken = err
                continue
            on_done(futures[fut], result)
            done.add(futures[fut])
    if broken is not None:
        raise broken
