"""A real single-node SLURM cluster on localhost, for the tests (Debian's slurmctld, slurmd, munge).

    with LocalSlurm(workdir, cpu_partition="cpu", gpu_partition="gpu") as cluster:
        subprocess.run(["sbatch", ...])

What it starts, all as root, in the foreground, and stops again on exit:
- ``munged`` with a fresh random key and its own socket under ``workdir`` (the system's munge,
  if any, is left alone; slurm.conf's ``AuthInfo=socket=`` points every SLURM program at ours);
- ``slurmctld`` and ``slurmd`` for one node with the machine's CPUs and memory, a CPU partition
  (default) and a GPU partition, and one GPU generic resource declared for scheduling only
  (``AutoDetect=off``, ``File=/dev/null``: SLURM allocates it and sets ``CUDA_VISIBLE_DEVICES``,
  there is no device behind it). No accounting database: ``sacct`` does not work, so the
  Snakemake plugin must use ``squeue`` for status.

The config is written to ``/etc/slurm/slurm.conf`` (and ``gres.conf``), not to a private path
named by ``SLURM_CONF``: the Snakemake job-step plugin removes ``SLURM_*`` variables before it
calls ``srun`` inside a job, so ``srun`` must find the config where a real cluster keeps it. Files
already there are moved aside and put back on exit. Ports are picked free at start.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

SLURM_ETC = Path("/etc/slurm")
DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_requirements() -> str | None:
    """Why a local SLURM cannot start here (a reason string), or None when it can."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as the submitting user and writes /etc/slurm)"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun") if shutil.which(b) is None]
    if missing:
        return f"SLURM/munge programs not installed: {', '.join(missing)} (apt-get install slurmctld slurmd slurm-client munge)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    return int(kb / 1024 * 0.8)  # leave room for the OS, as slurmd does not allow more than it sees


class LocalSlurm:
    """Start/stop a one-node SLURM (see module docstring). ``workdir`` holds state, spool, logs."""

    def __init__(self, workdir: Path, cpu_partition: str = "cpu", gpu_partition: str = "gpu",
                 min_job_age_s: int = 3600):
        self.workdir = Path(workdir)
        self.cpu_partition = cpu_partition
        self.gpu_partition = gpu_partition
        self.min_job_age_s = min_job_age_s
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.procs: dict[str, subprocess.Popen] = {}
        self._moved: list[tuple[Path, Path]] = []

    # --- configuration -------------------------------------------------------------------------
    def slurm_conf(self) -> str:
        w = self.workdir
        return "\n".join([
            "ClusterName=mrichain-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.d_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={w}/munge/munge.socket",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={w}/state",
            f"SlurmdSpoolDir={w}/spool",
            f"SlurmctldPidFile={w}/slurmctld.pid",
            f"SlurmdPidFile={w}/slurmd.pid",
            f"SlurmctldLogFile={w}/log/slurmctld.log",
            f"SlurmdLogFile={w}/log/slurmd.log",
            "SlurmctldDebug=info",
            "ProctrackType=proctrack/linuxproc",  # no cgroups in a container
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1000",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "GresTypes=gpu",
            f"MinJobAge={self.min_job_age_s}",  # finished jobs stay visible to scontrol/squeue
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            "Waittime=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_memory_mb()} Gres=gpu:1 State=UNKNOWN",
            f"PartitionName={self.cpu_partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName={self.gpu_partition} Nodes={self.node} MaxTime=INFINITE State=UP",
            "",
        ])

    def gres_conf(self) -> str:
        return f"AutoDetect=off\nNodeName={self.node} Name=gpu File=/dev/null\n"

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "LocalSlurm":
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        w = self.workdir
        for d in ("munge", "state", "spool", "log"):
            (w / d).mkdir(parents=True, exist_ok=True)
        (w / "munge").chmod(0o755)  # munged wants its socket directory reachable by all
        key = w / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.ctld_port, self.d_port = _free_port(), _free_port()
        SLURM_ETC.mkdir(parents=True, exist_ok=True)
        for name, text in (("slurm.conf", self.slurm_conf()), ("gres.conf", self.gres_conf())):
            target = SLURM_ETC / name
            if target.exists():
                backup = target.with_name(f"{name}.mrichain-test-backup")
                target.rename(backup)
                self._moved.append((backup, target))
            else:
                self._moved.append((None, target))
            target.write_text(text)
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={w}/munge/munge.socket",
                               f"--key-file={key}", f"--log-file={w}/log/munged.log",
                               f"--pid-file={w}/munge/munged.pid", f"--seed-file={w}/munge/munged.seed"])
        self._wait_for(lambda: (w / "munge" / "munge.socket").exists(), "munged socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait_for(self._node_idle, "the SLURM node to become idle", timeout=60)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / "log" / f"{name}.out", "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def _wait_for(self, ready, what: str, timeout: float = 30) -> None:
        t_end = time.time() + timeout
        while time.time() < t_end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}:\n{self.logs()}")

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for f in sorted((self.workdir / "log").glob("*")):
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel remaining jobs, stop the daemons (slurmd, slurmctld, munged), restore /etc/slurm."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", "root"], capture_output=True)
        for name in reversed(DAEMONS):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for backup, target in reversed(self._moved):
            target.unlink(missing_ok=True)
            if backup is not None:
                backup.rename(target)
        self._moved.clear()

    # --- queries -------------------------------------------------------------------------------
    def job(self, job_id: str | int) -> dict[str, str]:
        """``scontrol show job`` as a flat dict (finished jobs stay for ``min_job_age_s``)."""
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, check=True)
        fields = {}
        for token in out.stdout.split():
            if "=" in token:
                k, v = token.split("=", 1)
                fields.setdefault(k, v)
        return fields

    def submitted_job_ids(self) -> list[int]:
        """Every batch job the controller accepted since it started (from its log)."""
        text = (self.workdir / "log" / "slurmctld.log").read_text(errors="replace")
        return sorted({int(m) for m in re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", text)})
