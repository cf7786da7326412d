"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's
packages (slurm-wlm, munge), configured in a temporary folder and started as root."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = """ClusterName=altk
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort=6917
SlurmdPort=6918
ReturnToService=2
KillWait=2
MpiDefault=none
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def available() -> str | None:
    """None when a cluster can start here, else why not."""
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol") if not shutil.which(b)
               and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}; Debian: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting slurmctld and slurmd needs root"
    return None


def start(root: Path) -> dict:
    """Start munged (if not running), slurmctld and slurmd; returns the environment clients need."""
    host = socket.gethostname()
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(host=host, root=root, cpus=os.cpu_count() or 1))
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
    subprocess.run(["/usr/sbin/slurmctld", "-f", str(conf)], check=True)
    subprocess.run(["/usr/sbin/slurmd", "-f", str(conf)], check=True)
    env = {"SLURM_CONF": str(conf)}
    for _ in range(120):
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env={**os.environ, **env})
        if out.stdout.strip() == "idle":
            return env
        time.sleep(0.5)
    raise RuntimeError(f"the Slurm node never became idle; see {root}/slurmctld.log and slurmd.log")


def stop(root: Path, env: dict) -> None:
    subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env={**os.environ, **env})
    for daemon in ("slurmd", "slurmctld"):
        pid = root / f"{daemon}.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass


def job_state(job_id: str, env: dict) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                         env={**os.environ, **env})
    return out.stdout.strip()


def running_jobs(env: dict) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True,
                         env={**os.environ, **env})
    return out.stdout.split()
