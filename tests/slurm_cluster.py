"""A throwaway one-node Slurm cluster on localhost, for tests: munged, slurmctld and slurmd with
every file (config, state, spool, logs, munge socket) under one temporary folder and private
ports, so it never touches a system Slurm or another test's cluster.

What works in a root container without systemd or cgroups (Debian 12, Slurm 22.05):
``SlurmUser=root``, ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` (no
cgroup plugins), ``select/cons_tres`` with ``CR_CPU`` (the node's CPUs are the only consumable),
no accounting storage (so ``sacct`` answers "accounting disabled": the harness falls back to
squeue and ``scontrol``), and munged run as the ``munge`` user with its own socket (it refuses to
run as root). ``KillWait`` is short so that a cancelled task dies within seconds, as a test needs.

``start_cluster`` raises ``ClusterUnavailable`` with the reason (binaries missing, a daemon that
does not start or a node that never comes up); tests turn that into a skip, never a pass.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "srun")
SBIN = ("/usr/sbin", "/sbin", "/usr/bin")


class ClusterUnavailable(RuntimeError):
    """The daemons cannot run here; the message says why."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN:
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _meminfo_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


@dataclass
class SlurmCluster:
    home: Path
    conf: Path
    node: str
    partition: str
    cpus: int
    env: dict[str, str] = field(default_factory=dict)  # SLURM_CONF for every client command
    _daemons: list[tuple[str, Path]] = field(default_factory=list)  # (name, pid file)
    munge_socket: Path | None = None

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(argv),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.home / name
            if path.is_file():
                out.append(
                    f"--- {name} (last 40 lines)\n"
                    + "\n".join(path.read_text(errors="replace").splitlines()[-40:])
                )
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the daemons, each by the pid it wrote: slurmd and slurmctld together (each waits
        a few seconds on its own), then munged."""
        slurm = [(n, p) for n, p in self._daemons if n != "munged"]
        munge = [(n, p) for n, p in self._daemons if n == "munged"]
        for group in (slurm, munge):
            pids = [pid for pid in (_read_pid(p) for _, p in group) if pid is not None]
            for pid in pids:
                _signal(pid, 15)
            deadline = time.monotonic() + 15
            while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in pids:
                if _alive(pid):
                    _signal(pid, 9)
        self._daemons.clear()
        shutil.rmtree(self.home, ignore_errors=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _which(b) is None]


def start_cluster(
    cpus: int | None = None,
    *,
    partition: str = "debug",
    kill_wait_s: int = 1,
    timeout_s: float = 60,
) -> SlurmCluster:
    """Start munged, slurmctld and slurmd for a one-node cluster named after this host."""
    missing = missing_binaries()
    if missing:
        raise ClusterUnavailable(
            f"Slurm/munge binaries not found: {', '.join(missing)} "
            f"(apt-get install slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        raise ClusterUnavailable("a private slurmd must run as root (SlurmdUser=root)")
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        raise ClusterUnavailable("no 'munge' user (the munge package creates it)") from None
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        raise ClusterUnavailable(f"{key} is missing (the munge package creates it)")

    # Not under pytest's 0700 tmp folders: munged (as the munge user) must reach its socket.
    home = Path(tempfile.mkdtemp(prefix="nirbench-slurm-"))
    os.chmod(home, 0o755)
    node = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    cluster = SlurmCluster(
        home=home, conf=home / "slurm.conf", node=node, partition=partition, cpus=cpus
    )
    try:
        _start_munge(cluster, munge_user, key)
        ctld_port, slurmd_port = _free_port(), _free_port()
        for sub in ("state", "spool"):
            (home / sub).mkdir()
        cluster.conf.write_text(f"""\
# One-node test cluster written by tests/slurm_cluster.py
ClusterName=nirbench-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={cluster.munge_socket}
StateSaveLocation={home}/state
SlurmdSpoolDir={home}/spool
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd.pid
SlurmctldLogFile={home}/slurmctld.log
SlurmdLogFile={home}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait={kill_wait_s}
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=300
MessageTimeout=20
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_meminfo_mb()} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
        cluster.env = {"SLURM_CONF": str(cluster.conf)}
        env = {**os.environ, **cluster.env}
        for name, argv in (
            ("slurmctld", [_which("slurmctld"), "-i"]),
            ("slurmd", [_which("slurmd"), "-N", node]),
        ):
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                raise ClusterUnavailable(
                    f"{name} did not start ({result.returncode}): "
                    f"{(result.stderr or result.stdout).strip()[-500:]}"
                )
            cluster._daemons.append((name, home / f"{name}.pid"))
        _wait_for_idle_node(cluster, timeout_s)
        return cluster
    except ClusterUnavailable as err:
        logs = cluster.logs()
        cluster.stop()
        raise ClusterUnavailable(f"{err}\n{logs}" if logs else str(err)) from None
    except BaseException:
        cluster.stop()
        raise


def _start_munge(cluster: SlurmCluster, user: pwd.struct_passwd, key: Path) -> None:
    home = cluster.home
    cluster.munge_socket = home / "munge.socket"
    pid_file = home / "munged.pid"
    argv = [
        _which("munged"),
        f"--socket={cluster.munge_socket}",
        f"--key-file={key}",
        f"--pid-file={pid_file}",
        f"--log-file={home}/munged.log",
        f"--seed-file={home}/munged.seed",
    ]
    # munged refuses root; the key is readable by the munge user only.
    for path in ("munged.log", "munged.seed"):
        (home / path).touch()
        os.chown(home / path, user.pw_uid, user.pw_gid)
    os.chown(home, user.pw_uid, user.pw_gid)
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterUnavailable("runuser not found: munged must be started as the munge user")
    result = subprocess.run(
        [runuser, "-u", user.pw_name, "--", *argv], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        raise ClusterUnavailable(
            f"munged did not start ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    cluster._daemons.append(("munged", pid_file))


def _wait_for_idle_node(cluster: SlurmCluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        result = cluster.run("sinfo", "-h", "-n", cluster.node, "-o", "%T", check=False)
        last = (result.stdout or result.stderr).strip()
        if result.returncode == 0 and last.rstrip("*") in ("idle", "mixed", "allocated"):
            return
        time.sleep(0.5)
    raise ClusterUnavailable(
        f"node {cluster.node} did not become idle within {timeout_s:.0f} s (sinfo says {last!r})"
    )


def wait_for_empty_queue(cluster: SlurmCluster, timeout_s: float = 30) -> None:
    """Cancel whatever is left of this cluster's jobs and wait until they are gone, so no task
    outlives its test (each task's processes end with their job)."""
    cluster.run("scancel", "--full", "-u", pwd.getpwuid(os.geteuid()).pw_name, check=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = cluster.run("squeue", "-h", "-r", check=False).stdout.strip()
        if not left:
            return
        time.sleep(0.5)
