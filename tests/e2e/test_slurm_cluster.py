"""Cluster mode against a real Slurm 22.05 cluster on this machine (``slurm_cluster``, with
Slurm's cgroup plugins): one ds01d per node (``node1`` with 2 simulated GPUs, ``node2`` with
4, each on the fake device files of its GRES), both on this machine's Docker engine. Real
users submit real jobs with ``container-create``; nothing is mocked. The bypass rows fake a
job's environment and run the job's step (``python -m ds01.cli.cluster``) themselves: ds01d
must believe Slurm only.
"""

from __future__ import annotations

import json
import os
import pty
import pwd
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from ds01.core.slurm_squeue import JOB_COMMENT
from ds01.model.text import plain
from support import (
    SLURM_CLUSTER_SCRIPT,
    TEST_IMAGES_YAML,
    Ds01Daemon,
    describe,
    free_port,
    make_world_traversable_dir,
    user_env,
    wait_until,
)

DS01 = str(Path(sys.executable).parent / "ds01")

#: Small enough for the test nodes (2 CPUs and 1024 MB each in slurm.conf).
LIMITS = """
cluster: slurm
defaults:
  gpu_limit: 4
  max_gpus_per_container: 4
  cpu_limit: 1
  memory_limit: 128M
  max_runtime_hours: 1
groups:
  phd: {priority: 80}
  msc: {priority: 20}
"""
NODES = (("node1", 2), ("node2", 4))
#: The users whose jobs the tests submit.
JOB_USERS = ("alice", "bob", "carol")

#: Seconds a test waits for what the cluster does in its own time: a scheduling pass and a
#: job's launch (slurmd, the job's step, the node's ds01d), a job's end after ``scancel``
#: (Slurm's KillWait, 30 s, before it kills a step that outlives its SIGTERM), slurmdbd
#: catching up, Slurm's once-a-minute priority pass. Generous: CI's 2-core machine is at
#: times much slower than a workstation, and a wait returns as soon as its condition holds.
CLUSTER_WAIT_S = 150.0


def wait_on_cluster(what: str, check: Callable[[], Any]) -> Any:
    """``wait_until`` for work of the cluster's daemons: ``CLUSTER_WAIT_S`` at most."""
    return wait_until(what, check, timeout=CLUSTER_WAIT_S)


class Cluster:
    """The nodes' daemons, and the environment a user's commands get on the cluster."""

    def __init__(self, slurm: dict[str, str], daemons: dict[str, Ds01Daemon], sockets: Path):
        self.slurm = slurm
        self.daemons = daemons
        #: ``%n``: each command reaches the ds01d of the node it runs on (in a job: its node;
        #: outside one, node1 stands for the login node).
        self.env = {
            "SLURM_CONF": slurm["SLURM_CONF"],
            "DS01_SOCKET": f"{sockets}/%n",
            "DS01_SLURM_NODE": "node1",
        }

    def ds01(self, user: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.daemons["node1"].cli(user, *args, env={**self.env, **env})

    def login(self, user: str, *args: str) -> Any:
        """``user``'s ds01 command on a login node (``DS01_CLUSTER=slurm``) that runs no ds01d:
        its socket leads nowhere, Slurm's data is all it has. Its ``--json`` answer."""
        env = {**self.env, "DS01_CLUSTER": "slurm", "DS01_SOCKET": "/nonexistent/ds01.sock"}
        done = self.daemons["node1"].cli(user, *args, "--json", env=env)
        assert done.returncode == 0, describe(done)
        return json.loads(done.stdout)

    def open_in_pty(self, user: str, *args: str) -> tuple[int, bytes]:
        """``container-open ARGS`` as ``user`` on the login node, on a new pseudo-terminal:
        its exit status and all it printed there."""
        env = {**self.env, "DS01_CLUSTER": "slurm", "TERM": "xterm"}
        assignments = [f"{key}={value}" for key, value in user_env(user, env).items()]
        command = self.daemons["node1"].command_for(("container-open", *args))
        master, slave = pty.openpty()
        process = subprocess.Popen(
            ["runuser", "-u", user, "--", "env", "-i", *assignments, *command],
            stdin=slave, stdout=slave, stderr=slave, cwd="/", start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        output = b""
        try:
            # A step of the job (srun) on node2 first: Slurm's launch, then the program's.
            while select.select([master], [], [], CLUSTER_WAIT_S)[0]:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                output += chunk
        except OSError:  # the process ended and closed the terminal
            pass
        finally:
            os.close(master)
        return process.wait(timeout=CLUSTER_WAIT_S), output

    def slurm_tool(self, *args: str, user: str | None = None) -> str:
        done = self.daemons["node1"].run_as(
            user, list(args), self.env, input=None, timeout=60, cwd="/tmp"
        )
        assert done.returncode == 0, describe(done)
        return done.stdout

    def job_state(self, job: int) -> str:
        """The job's state and node (``RUNNING node2``), or ``""`` once Slurm forgot it."""
        return self.slurm_tool("squeue", "--noheader", "-j", str(job), "-o", "%T %N").strip()

    def slurmd_pid(self, node: str) -> int:
        run = Path(self.slurm["DS01_SLURM_DIR"]) / "run"
        return int((run / f"slurmd-{node}.pid").read_text())

    def end_users_jobs(self, docker_client: Any) -> None:
        """Cancel the jobs of ``JOB_USERS`` and wait until Slurm has none of them and no job's
        container is left: their steps remove their containers through the nodes' ds01d
        (which also removes the cgroups Docker made for them), the reaper those whose step
        was killed."""
        for user in JOB_USERS:
            self.slurm_tool("scancel", f"--user={user}")
        users = ",".join(JOB_USERS)
        wait_on_cluster(
            "the users' jobs to end",
            lambda: not self.slurm_tool("squeue", "--noheader", f"--user={users}").strip(),
        )
        wait_on_cluster(
            "their jobs' containers to be gone",
            lambda: not _labelled(docker_client, "ds01.slurm.job"),
        )

    def start_what_is_down(self) -> None:
        """``slurm-cluster.sh up``: starts the daemons that are not running (a killed slurmd)
        and returns once every node serves again."""
        up = subprocess.run(
            ["bash", str(SLURM_CLUSTER_SCRIPT), "up"], capture_output=True, text=True, timeout=120
        )
        assert up.returncode == 0, describe(up)


@pytest.fixture(scope="class")
def cluster(
    request: pytest.FixtureRequest,
    slurm_cluster: dict[str, str],
    ds01d_per_class: Callable[..., Ds01Daemon],
    docker_client: Any,
) -> Iterator[Cluster]:
    """The nodes' ds01d, with the class's ``LIMITS`` if it has its own, else ``LIMITS``."""
    limits = getattr(request.cls, "LIMITS", LIMITS)
    devices = Path(slurm_cluster["DS01_SLURM_DIR"]) / "dev"
    sockets = make_world_traversable_dir("ds01-nodes-")
    daemons = {}
    for node, count in NODES:
        gpus = "\n".join(f"    - {{device_node: {devices}/{node}/nvidia{i}}}" for i in range(count))
        daemons[node] = ds01d_per_class(
            resource_limits=limits,
            gpu_config=f"backend: simulated\nsimulated:\n  uuid_seed: {node}\n  gpus:\n{gpus}\n",
            images=TEST_IMAGES_YAML,
            extra_args=["--slurm-node", node, "--slurm-interval", "1", "--metrics-listen", "off"],
            env={"SLURM_CONF": slurm_cluster["SLURM_CONF"]},
        )
        (sockets / node).symlink_to(daemons[node].paths.socket)
    made = Cluster(slurm_cluster, daemons, sockets)
    # Slurm's accounts and QOS from the same resource-limits.yaml (no association, no job).
    config_dir = str(daemons["node1"].paths.config_dir)
    made.slurm_tool(DS01, "admin", "slurm", "sync", "--config-dir", config_dir)
    # alice uses a GPU from the start (on node1, which no test needs whole): Slurm applies
    # usage once a minute, and the fair-share test, last, finds hers applied by then.
    made.slurm_tool(
        "sbatch", "--job-name=early", "--gres=gpu:1", "--nodelist=node1", "--mem=64M",
        "--output=/dev/null", "--wrap=sleep 2", user="alice",
    )  # fmt: skip
    yield made
    # The next class's checks find no job, container or cgroup left by this one.
    made.end_users_jobs(docker_client)
    shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_job_left(cluster: Cluster, docker_client: Any) -> Iterator[None]:
    """After each test, none of the users' jobs and their containers: a test that fails
    half-way would leave its job holding GPUs, and fail the tests after it too."""
    yield
    cluster.end_users_jobs(docker_client)


def _containers(docker_client: Any, name: str) -> list[Any]:
    return _labelled(docker_client, f"ds01.name={name}")


def _labelled(docker_client: Any, label: str) -> list[Any]:
    """Docker's containers with ``label`` (``KEY`` or ``KEY=VALUE``), running or not."""
    while True:
        try:
            return list(docker_client.containers.list(all=True, filters={"label": label}))
        except docker.errors.NotFound:  # removed between the listing and its inspection: again
            continue


def _running_container(docker_client: Any, name: str) -> Any:
    found = _containers(docker_client, name)
    return found[0] if found and found[0].status == "running" else None


def _submitted(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, describe(result)
    return int(json.loads(result.stdout)["slurm_job"])


def _submit_container(cluster: Cluster, user: str, name: str, *, gpus: int) -> int:
    """``user``'s ``container-create NAME --gpus N --start`` of busybox: its Slurm job."""
    return _submitted(
        cluster.ds01(user, "container-create", name, "--image", "busybox", "--gpus", str(gpus),
                     "--start", "--json")
    )  # fmt: skip


def _step(
    cluster: Cluster, user: str, job: int, node: str, request: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """``user`` runs a job's step by hand, with a job's environment made up."""
    env = {**cluster.env, "SLURM_JOB_ID": str(job), "SLURMD_NODENAME": node}
    return cluster.daemons[node].run_as(
        user,
        [sys.executable, "-m", "ds01.cli.cluster", json.dumps(request)],
        env,
        input=None,
        timeout=60,
        cwd="/tmp",
    )


def _waiting_jobs(cluster: Cluster, prefix: str, users: tuple[str, ...]) -> dict[str, int]:
    """One job of each of ``users`` (``PREFIX-USER``), waiting on a begin time an hour ahead:
    Slurm computes their priorities at once. User → job id."""
    return {
        user: int(
            cluster.slurm_tool(
                "sbatch", "--parsable", f"--job-name={prefix}-{user}", "--gres=gpu:1",
                "--mem=64M", "--begin=now+3600", "--output=/dev/null", "--wrap=true",
                user=user,
            ).split(";")[0]
        )
        for user in users
    }  # fmt: skip


def _priority_order(cluster: Cluster, jobs: dict[str, int]) -> tuple[list[str], dict[str, int]]:
    """Slurm's order of ``jobs`` (their users, first first) and each user's job priority
    (``squeue --priority``: sprio leaves out jobs not yet eligible)."""
    ids = ",".join(str(job) for job in jobs.values())
    rows = [
        row.split()
        for row in cluster.slurm_tool(
            "squeue", "--priority", "--noheader", "-j", ids, "-o", "%u %Q"
        ).splitlines()
    ]
    return [user for user, _ in rows], {user: int(value) for user, value in rows}


def _dead(pid: int) -> bool:
    """Whether process ``pid`` ended (gone, or a zombie that nobody reaps)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _submitted_and_mid_create(cluster: Cluster, docker_client: Any, name: str) -> int:
    """alice's ``container-create NAME --gpus 3`` (node2 alone has 3 GPUs): its job, once
    Docker made the container, i.e. while node2's ds01d is in the middle of the create."""
    made = docker_client.events(
        decode=True,
        filters={"type": "container", "event": "create", "label": f"ds01.name={name}"},
        until=int(time.time() + CLUSTER_WAIT_S),
    )
    try:
        job = _submit_container(cluster, "alice", name, gpus=3)
        assert next(iter(made), None), f"no create of {name} in {CLUSTER_WAIT_S:.0f} s"
    finally:
        made.close()
    return job


def _settled_after_a_crash(cluster: Cluster, docker_client: Any, job: int, name: str) -> str:
    """Wait until job and container agree, and say how: ``"gone"`` (both), ``"running"``
    (both; then node2's ds01d holds exactly the container's devices), or ``"pending"`` (Slurm
    requeued the job: no container until it runs again). Then the job is cancelled and both
    go, and no device of node2 is held at the end."""
    node2 = cluster.daemons["node2"]

    def settled() -> str | None:
        state, found = cluster.job_state(job), _containers(docker_client, name)
        if not state and not found:
            return "gone"
        if state.startswith("PENDING") and not found:
            return "pending"
        if state.startswith("RUNNING") and [c.status for c in found] == ["running"]:
            return "running"
        return None

    how: str = wait_on_cluster("the job and its container to agree", settled)
    if how == "running":
        [container] = _containers(docker_client, name)
        held = [d["uuid"] for d in node2.cli_json("alice", "gpu-status") if d["holder"]]
        assert sorted(held) == sorted(container.labels["ds01.gpus"].split(","))
    if how != "gone":
        cluster.slurm_tool("scancel", str(job), user="alice")
        wait_on_cluster(f"{name} and its job to be gone", lambda: settled() == "gone")
    assert [d["holder"] for d in node2.cli_json("alice", "gpu-status")] == [None] * 4
    return how


# -- the login node's report and exporter: what Slurm's accounting and queue tell --------------
# First in the file: the fair-share test, last, waits for Slurm's once-a-minute pass after the
# first sync of the accounts, which this class makes; its time counts towards that minute.

#: Idle containers stop after 7.2 s (idle_timeout_hours: 0.002), looked at twice a second.
IDLE_LIMITS = (
    LIMITS.replace(
        "  max_runtime_hours: 1\n", "  max_runtime_hours: 1\n  idle_timeout_hours: 0.002\n"
    )
    + "policies:\n  lifecycle_interval_seconds: 0.5\n  idle_grace_minutes: 0\n"
)


#: A file whose presence ends ``KEEP_ALIVE_UNTIL_LET_GO`` (in the container's /tmp).
LET_GO = "/tmp/ds01-test-let-go"
#: A container's command that touches its keep-alive file every second until ``LET_GO``
#: exists, then removes the file: from then on only real activity counts.
KEEP_ALIVE_UNTIL_LET_GO = (
    f"while [ ! -e {LET_GO} ]; do touch /workspace/.keep-alive; sleep 1; done; "
    "rm -f /workspace/.keep-alive"
)


def _queue_samples(port: int) -> dict[tuple[str, str], float] | None:
    """The login exporter's ``ds01_queue_length`` samples (user, reason) → value, or ``None``
    while it does not answer or Slurm did not."""
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    found = {f.name: f for f in text_string_to_metric_families(text)}
    if "ds01_queue_length" not in found:
        return None
    return {
        (s.labels["user"], s.labels["reason"]): s.value for s in found["ds01_queue_length"].samples
    }


class TestLoginNodeAccountingAndQueueMetrics:
    LIMITS = IDLE_LIMITS

    def test_the_report_counts_oom_kills_and_idle_stops_and_the_exporter_slurms_queue(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))
        port = free_port()
        exporter = subprocess.Popen(
            [DS01, "admin", "slurm", "exporter", "--listen", f"127.0.0.1:{port}"],
            env={**os.environ, **cluster.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            # alice's idle container holds node2's 4 GPUs; bob's 3 then fit nowhere.
            idler = _submit_container(cluster, "alice", "idler", gpus=4)
            held = wait_on_cluster(
                "idler to run", lambda: _running_container(docker_client, "idler")
            )
            # ds01d stops idler 7.2 s after its last activity, and bob's job then runs: a
            # slow machine takes longer than that to submit it and see it pend. A touch of
            # idler's keep-alive file is activity: touched until bob's job was seen pending.
            held.exec_run(["sh", "-c", KEEP_ALIVE_UNTIL_LET_GO], detach=True)
            waiter = _submit_container(cluster, "bob", "waiter", gpus=3)
            # The login node's exporter: bob's job pending for resources, under ds01's names.
            samples = wait_on_cluster(
                "the exporter to show bob's pending job",
                lambda: (_queue_samples(port) or {}).get(("bob", "Resources")),
            )
            assert samples == 1
            held.exec_run(["touch", LET_GO])
            # alice's batch job runs out of its --mem on node1 (her priority is above bob's).
            hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
            done = cluster.ds01(
                "alice", "job", "run", "--image", "busybox", "--memory", "64M", "--name",
                "hog2", "--wait", "--json", "--", "sh", "-c", hog,
            )  # fmt: skip
            assert done.returncode == 137, describe(done)
            oom_job = json.loads(done.stdout)["slurm_job"]
            # idler is stopped for idleness by node2's ds01d, which says so in its job.
            wait_on_cluster(
                "idler's idle stop",
                lambda: cluster.daemons["node2"].events_where(action="cleanup.idle"),
            )
            cluster.slurm_tool("scancel", str(waiter), user="bob")

            def recorded() -> str:
                """Both jobs' records as a query of the report's window finds them (not by their
                ids: slurmdbd answered for hog2 by its id, ended and noted, while a window
                query still left it out)."""
                text = cluster.slurm_tool(
                    "sacct", "-X", "-n", "-P", "--allusers", "--duplicates",
                    f"--starttime={since}", f"--endtime={time.strftime('%Y-%m-%dT%H:%M:%S')}",
                    "--format=JobIDRaw,State,End,AdminComment",
                )  # fmt: skip
                jobs = {str(idler), str(oom_job)}
                return "\n".join(r for r in text.splitlines() if r.split("|")[0] in jobs)

            def both_ended() -> bool:
                text = recorded()
                found = {r.split("|")[0] for r in text.splitlines()}
                return (
                    found == {str(idler), str(oom_job)}
                    and "Unknown" not in text
                    and all(note in text for note in ("ds01:stop_idle", "ds01:oom_kill"))
                )

            # Every record slurmdbd holds of both jobs (--duplicates) ended, with ds01d's notes:
            # hog2's end can reach slurmdbd seconds after `--wait` returned.
            wait_on_cluster("sacct to keep both jobs' ends", both_ended)
            # The kill's note names the limit hit: the container's own or its job's --mem (its
            # parent is the job's cgroup), never a user's total across containers. (A note's
            # apostrophe is the typographic one, which sacctmgr keeps.)
            [oom_note] = {r for r in recorded().splitlines() if "ds01:oom_kill" in r}
            assert "its own memory limit" in oom_note or (
                f"Slurm job {oom_job}\u2019s memory (--mem)" in oom_note
            ), oom_note
            # The report on the login node: from sacct, alice's OOM kill and idle stop.
            report = cluster.login("alice", "admin", "report", "--from", since)
            users = {u["user"]: u for u in report["users"]}
            ends = {k: users["alice"][k] for k in ("oom_kills", "idle_stops", "runtime_stops")}
            assert ends == {"oom_kills": 1, "idle_stops": 1, "runtime_stops": 0}, recorded()
            assert any("Prometheus" in note for note in report["notes"])
        finally:
            exporter.terminate()
            exporter.wait(timeout=10)


class TestClusterMode:
    def test_a_container_that_fits_only_on_node2_lands_there_and_scancel_stops_it(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        job = _submit_container(cluster, "alice", "big", gpus=3)
        assert cluster.slurm_tool("squeue", "--noheader", "-n", "big", "-o", "%i").split() == [
            str(job)
        ]
        container = wait_on_cluster("big to run", lambda: _running_container(docker_client, "big"))
        labels = container.labels
        assert (labels["ds01.slurm.job"], labels["ds01.slurm.node"]) == (str(job), "node2")
        assert cluster.job_state(job) == "RUNNING node2"
        # The login node's views: the container on its node, node2's GPUs held.
        [listed] = cluster.login("alice", "container-list")
        assert (listed["name"], listed["node"], listed["status"]) == ("big", "node2", "running")
        assert listed["slurm_job"] == job
        nodes = {n["node"]: n for n in cluster.login("alice", "gpu-status")}
        assert (nodes["node2"]["used"], nodes["node2"]["gpus"]) == (3, 4)
        # A terminal in it from the login node: a step of its job on node2, as alice.
        code, said = cluster.open_in_pty("alice", "big", "--", "sh", "-c", "tty; id -u; exit 7")
        assert code == 7, said
        assert b"/dev/pts/" in said and str(pwd.getpwnam("alice").pw_uid).encode() in said, said
        assert cluster.daemons["node2"].events_where(action="container.terminal", user="alice")
        node2 = cluster.daemons["node2"].cli_json("alice", "gpu-status")
        held = [d["uuid"] for d in node2 if d["holder"]]
        assert sorted(labels["ds01.gpus"].split(",")) == sorted(held) and len(held) == 3
        # Its processes are inside the job's cgroup, under the job's memory limit (--mem).
        job_cgroup = f"/slurm_node2/uid_{pwd.getpwnam('alice').pw_uid}/job_{job}"
        pid = container.attrs["State"]["Pid"]
        memory = next(
            line.split(":", 2)[2]
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
            if line.split(":")[1] == "memory"
        )
        assert memory.startswith(job_cgroup + "/"), memory
        limit = Path(f"/sys/fs/cgroup/memory{job_cgroup}/memory.limit_in_bytes").read_text()
        assert int(limit) == 128 * 2**20
        cluster.slurm_tool("scancel", str(job), user="alice")
        wait_on_cluster("big to be gone", lambda: not _containers(docker_client, "big"))
        wait_on_cluster("its job to end", lambda: cluster.job_state(job) == "")
        # Nothing left of the job's cgroup, nor of alice's uid_ cgroup on node2 (she has no
        # other job there): Slurm's hierarchies, nor those Docker made.
        hierarchies = list(Path("/sys/fs/cgroup").iterdir())
        user_cgroup = job_cgroup.rsplit("/", 1)[0].lstrip("/")
        wait_on_cluster(
            "the job's and its user's cgroups to be gone",
            lambda: not [h for h in hierarchies if (h / user_cgroup).exists()],
        )

    def test_a_container_that_exits_ends_its_job(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        job = _submit_container(cluster, "alice", "small", gpus=1)
        container = wait_on_cluster(
            "small to run", lambda: _running_container(docker_client, "small")
        )
        container.kill()
        wait_on_cluster("its job to end", lambda: cluster.job_state(job) == "")
        wait_on_cluster("small to be gone", lambda: not _containers(docker_client, "small"))

    def test_a_batch_job_writes_its_output_and_ends_with_the_commands_exit_status(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        done = cluster.ds01(
            "alice", "job", "run", "--image", "busybox", "--gpus", "1", "--name", "batch",
            "--runtime-hours", "0.25", "--wait", "--json",
            "--", "sh", "-c", "echo out-$((6*7)); exit 3",
        )  # fmt: skip
        assert done.returncode == 3, describe(done)
        answer = json.loads(done.stdout)
        assert (answer["name"], answer["exit_code"]) == ("batch", 3)
        assert "--time=15" in answer["sbatch"]  # --runtime-hours is the job's time limit
        job = answer["slurm_job"]
        assert answer["output"].endswith(f"/.ds01/jobs/batch-{job}.out")
        assert "out-42" in Path(answer["output"]).read_text()
        assert not _containers(docker_client, "batch")
        assert cluster.job_state(job) == ""

    def test_a_note_on_a_job_that_has_ended_still_reaches_its_accounting(
        self, cluster: Cluster
    ) -> None:
        # ds01d's note of an OOM kill can come after the kill ended the job: slurmctld then
        # refuses the update, and the note goes to slurmdbd's record of the job.
        done = cluster.ds01(
            "alice", "job", "run", "--image", "busybox", "--name", "ended", "--wait", "--json",
            "--", "true",
        )  # fmt: skip
        assert done.returncode == 0, describe(done)
        job = json.loads(done.stdout)["slurm_job"]
        wait_on_cluster("the job to end", lambda: cluster.job_state(job) == "")
        note = "ds01:oom_kill: 1 process(es) killed, alice's memory total across all hit"
        noted = subprocess.run(
            [sys.executable, "-c",
             "import sys; from ds01.runtime.slurm import set_admin_comment; "
             "done = set_admin_comment(int(sys.argv[1]), sys.argv[2]); "
             "sys.exit(f'not written: {done}' if done.value != 'written' else 0)",
             str(job), note],
            env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert noted.returncode == 0, describe(noted)

        def kept() -> str:
            return cluster.slurm_tool(
                "sacct", "-X", "-n", "-P", "-j", str(job), "--format=State,AdminComment"
            ).strip()

        # squeue stops showing an ended job before slurmdbd has its end (slurmctld queues it
        # for slurmdbd): the note may come first, and the end keeps it (slurmdbd writes an
        # AdminComment then only where slurmctld's job has one).
        ended = wait_on_cluster(
            "slurmdbd to keep the job's end",
            lambda: (text := kept()).split("|")[0] not in ("", "PENDING", "RUNNING") and text,
        )
        # (sacctmgr would write the apostrophe as a backquote: ds01 gives it the typographic one)
        assert ended == "COMPLETED|" + note.replace("'", "\u2019"), ended

    def test_slurms_memory_limit_kills_inside_the_container_not_the_node(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        # The shell holds ~200 MB in a variable: past the job's --mem (64M).
        hog = "echo started; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
        done = cluster.ds01(
            "alice", "job", "run", "--image", "busybox", "--memory", "64M", "--name", "hog",
            "--wait", "--json", "--", "sh", "-c", hog,
        )  # fmt: skip
        assert done.returncode == 137, describe(done)
        answer = json.loads(done.stdout)
        assert "--mem=64M" in answer["sbatch"]
        output = Path(answer["output"]).read_text()
        assert "started" in output and "survived" not in output, output
        assert "killed (SIGKILL)" in output, output
        assert not _containers(docker_client, "hog")
        # The node lives: both ds01d and both slurmd, and the nodes take jobs.
        assert all(d.running for d in cluster.daemons.values())
        run = Path(cluster.slurm["DS01_SLURM_DIR"]) / "run"
        for node, _ in NODES:
            os.kill(int((run / f"slurmd-{node}.pid").read_text()), 0)
        states = cluster.slurm_tool("sinfo", "--noheader", "--Node", "--format=%t").split()
        assert not [s for s in states if s.startswith(("down", "drain", "fail"))], states

    def test_kill_9_of_a_nodes_ds01d_mid_create_leaves_no_orphan_and_no_device_twice(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        job = _submitted_and_mid_create(cluster, docker_client, "crash")
        node2 = cluster.daemons["node2"]
        node2.kill(signal.SIGKILL)
        node2.start()
        # Both gone (the step lost ds01d; the create intent at ds01d's start or the reaper
        # removed the container), or both running (the step's start reached the new ds01d).
        _settled_after_a_crash(cluster, docker_client, job, "crash")

    def test_kill_9_of_a_nodes_slurmd_mid_create_leaves_no_orphan_and_no_device_twice(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        job = _submitted_and_mid_create(cluster, docker_client, "nodecrash")
        pid = cluster.slurmd_pid("node2")
        os.kill(pid, signal.SIGKILL)
        wait_on_cluster("node2's slurmd to die", lambda: _dead(pid))
        cluster.start_what_is_down()
        # The job's step runs under its own slurmstepd and outlives slurmd: its container is
        # made, and the new slurmd takes the step back ("running"). Under load slurmctld may
        # have requeued the job meanwhile: ds01d removes the first step's container, whose job
        # no longer runs on node2 ("pending", or "running" again once relaunched). Either
        # way: one job, at most one container, no device twice.
        _settled_after_a_crash(cluster, docker_client, job, "nodecrash")
        # node2 serves (`up` waited for it to register), neither down nor drained.
        states = cluster.slurm_tool("sinfo", "--noheader", "-n", "node2", "--format=%t").split()
        assert not [s for s in states if s.startswith(("down", "drain", "fail"))], states

    def test_a_container_whose_step_is_killed_is_removed_by_the_reaper(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        job = _submit_container(cluster, "alice", "orphan", gpus=1)
        container = wait_on_cluster(
            "orphan to run", lambda: _running_container(docker_client, "orphan")
        )
        node, job_cgroup = (container.labels[f"ds01.slurm.{k}"] for k in ("node", "cgroup"))
        # kill -9 of the job's step: it cannot remove the container; its job ends.
        procs = Path(f"/sys/fs/cgroup/freezer{job_cgroup}/step_batch/cgroup.procs")
        for pid in procs.read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        wait_on_cluster("its job to end", lambda: cluster.job_state(job) == "")
        wait_on_cluster(
            "the reaper to remove orphan", lambda: not _containers(docker_client, "orphan")
        )
        [event] = wait_on_cluster(
            "the reaper's event",
            lambda: cluster.daemons[node].events_where(action="cleanup.orphan"),
        )
        assert event["resource"].startswith("container/orphan.")
        assert event["details"]["reason"] == "its Slurm job is no longer running on this node"

    def test_a_request_that_fits_nowhere_pends_with_slurms_reason_and_starts_when_a_job_ends(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        # alice holds 3 of node2's 4 GPUs; bob's 3 fit on no node now (his own quota would).
        first = _submit_container(cluster, "alice", "first", gpus=3)
        wait_on_cluster("first to run", lambda: _running_container(docker_client, "first"))
        second = _submit_container(cluster, "bob", "second", gpus=3)
        [waiting] = wait_on_cluster(
            "second to pend for resources",
            lambda: [c for c in cluster.login("bob", "queue") if c["reason"] == "Resources"],
        )
        assert (waiting["name"], waiting["slurm_job"], waiting["node"]) == ("second", second, None)
        listed = {c["name"]: c["status"] for c in cluster.login("bob", "container-list")}
        assert listed == {"second": "pending"}  # bob's own only
        # The report on the login node: both nodes, first holding node2's GPUs, second
        # pending with Slurm's reason, and GPU-hours from sacct (first's, and those of
        # alice's jobs of the tests before).
        report = cluster.login("alice", "admin", "report", "--from", "1d")
        nodes = {n["node"]: n for n in report["nodes"]}
        assert set(nodes) == {"node1", "node2"}
        assert [(h["name"], h["gpus"]) for h in nodes["node2"]["holders"]] == [("first", 3)]
        assert [(c["name"], c["reason"]) for c in report["pending"]] == [("second", "Resources")]
        users = {u["user"]: u for u in report["users"]}
        assert (users["alice"]["gpus_held"], users["bob"]["containers_pending"]) == (3, 1)
        assert users["alice"]["jobs"] >= 1 and users["alice"]["gpu_hours"] > 0, report
        # The dashboard there: the same nodes and holders.
        overview = cluster.login("bob", "ds01-dashboard", "--once")
        assert [n["holders"] for n in overview["nodes"]] == [n["holders"] for n in nodes.values()]
        cluster.slurm_tool("scancel", str(first), user="alice")
        wait_on_cluster("second to run", lambda: _running_container(docker_client, "second"))
        assert cluster.login("bob", "queue") == []
        cluster.slurm_tool("scancel", str(second), user="bob")
        wait_on_cluster("second to be gone", lambda: not _containers(docker_client, "second"))

    def test_slurm_orders_waiting_jobs_as_the_priorities_say_and_explain_names_the_qos(
        self, cluster: Cluster
    ) -> None:
        jobs = _waiting_jobs(cluster, "later", ("bob", "alice"))
        try:
            order, priority = _priority_order(cluster, jobs)
            assert order == ["alice", "bob"], priority
            assert priority["alice"] > priority["bob"] > 0, priority  # phd's 80 before msc's 20
        finally:
            cluster.slurm_tool("scancel", ",".join(str(job) for job in jobs.values()))
        # check-limits --explain on a node: the YAML line and the QOS that holds each limit.
        explained = cluster.ds01("alice", "check-limits", "--explain", "--json")
        assert explained.returncode == 0, describe(explained)
        entries = json.loads(explained.stdout)["explain"]
        assert entries["priority"]["slurm"] == (
            "QOS ds01-group-phd Priority=80; association phd/alice Fairshare=80"
        )
        assert entries["gpu_limit"]["slurm"] == "QOS ds01-group-phd MaxTRESPerUser=gres/gpu=4"
        limits_file = cluster.daemons["node1"].paths.config_dir / "resource-limits.yaml"
        lines = limits_file.read_text().splitlines()
        assert "priority: 80" in lines[entries["priority"]["line"] - 1]
        assert "gpu_limit: 4" in lines[entries["gpu_limit"]["line"] - 1]

    @pytest.mark.parametrize(
        ("user", "where", "gpus", "said"),
        [
            ("alice", "its node", 1, "is not yours"),  # bob's job
            ("bob", "its node", 2, "its Slurm job holds 1"),  # more than the job holds
            ("bob", "the other node", 1, "does not run on"),  # another node's devices
            # bob's own job, on its node, but from outside the job's cgroup: the container
            # would escape the job's CPU and memory limits.
            ("bob", "its node", 1, "your process is not in it"),
        ],
    )
    def test_a_step_with_a_made_up_environment_is_refused(
        self,
        cluster: Cluster,
        docker_client: Any,
        user: str,
        where: str,
        gpus: int,
        said: str,
    ) -> None:
        job = int(
            cluster.slurm_tool(
                "sbatch", "--parsable", "--job-name=claim", "--gres=gpu:1", "--mem=64M",
                "--output=/dev/null", "--wrap=sleep 120", user="bob",
            ).split(";")[0]
        )  # fmt: skip
        try:
            wait_on_cluster(
                "bob's job to run", lambda: cluster.job_state(job).startswith("RUNNING")
            )
            node = cluster.job_state(job).split()[1]
            if where == "the other node":
                node = "node2" if node == "node1" else "node1"
            request = {"name": "claim", "image": "busybox", "gpus": gpus}
            done = _step(cluster, user, job, node, request)
            assert done.returncode == 1 and said in done.stderr, describe(done)
            assert not _containers(docker_client, "claim")
        finally:
            cluster.slurm_tool("scancel", str(job))

    def test_a_held_job_whose_comment_spells_slurms_fields_gets_no_container(
        self, cluster: Cluster, docker_client: Any
    ) -> None:
        # scontrol's text prints the comment raw after the real fields: read as text, this held
        # job without GPUs was a running one holding node2's four.
        forged = "ds01-container JobState=RUNNING Nodes=node2 x GRES=gpu:4(IDX:0-3)"
        job = int(
            cluster.slurm_tool(
                "sbatch", "--parsable", "--hold", "--job-name=c1", f"--comment={forged}",
                "--mem=64M", "--output=/dev/null", "--wrap=true", user="bob",
            ).split(";")[0]
        )  # fmt: skip
        try:
            request = {"name": "c1", "image": "busybox", "gpus": 4}
            done = _step(cluster, "bob", job, "node2", request)
            said = "is PENDING, not RUNNING"
            assert done.returncode == 1 and said in done.stderr, describe(done)
            assert not _containers(docker_client, "c1")
        finally:
            cluster.slurm_tool("scancel", str(job))

    def test_a_name_or_comment_in_the_login_nodes_format_adds_no_row_to_another_users_views(
        self, cluster: Cluster
    ) -> None:
        # squeue prints a job's name and comment raw. bob writes in them a pending container
        # of root's with 8 GPUs, in the layout of ds01's format with marks made up (a call's
        # own are random and reach squeue in its environment), on lines of their own, and
        # with bars: alice's views list his held job's container as his, its name whole, and
        # nothing of root's; his other job's comment is not ds01's.
        mark = "0" * 32
        fields = ["424242", "admin", "0", "root", "PENDING", "Priority", "", "gres:gpu:8",
                  JOB_COMMENT, "9999", "1796000000", "N/A"]  # fmt: skip
        record = f"{mark}{mark.join(fields)}{mark}\n"
        text_row = f"424242|admin|PENDING||Priority|gres:gpu:8|0:00|root|{JOB_COMMENT}"
        name = f"c1{mark}\n{record}{text_row}"
        jobs = [
            int(
                cluster.slurm_tool(
                    "sbatch", "--parsable", "--hold", f"--job-name={job_name}",
                    f"--comment={comment}", "--mem=64M", "--output=/dev/null", "--wrap=true",
                    user="bob",
                ).split(";")[0]
            )
            for job_name, comment in ((name, JOB_COMMENT), ("c2", f"{JOB_COMMENT}\n{record}"))
        ]  # fmt: skip
        for view in ("container-list", "queue"):
            listed = cluster.login("alice", view, "--all")
            assert [(c["slurm_job"], c["user"], c["name"]) for c in listed] == [
                (jobs[0], "bob", plain(name))
            ], view
            assert listed[0]["reason"] == "JobHeldUser" and listed[0]["gpus"] == 0
        assert cluster.login("bob", "container-list")[0]["name"] == plain(name)

    def test_fair_share_orders_the_user_who_used_more_after_one_of_the_same_priority(
        self, cluster: Cluster
    ) -> None:
        # Last of the file: alice (phd) has run jobs since the cluster started (the fixtures',
        # the tests before, those of the login node's class first); carol (phd too: the same
        # QOS priority and shares) none. Slurm counts a job's usage when it ends, but
        # computes the fair-share factors once per PriorityCalcPeriod (a minute): wait for
        # a pass after their associations came (at the first class's sync) and after one of
        # alice's jobs ended (a pass can fall between the two). Her usage shows in sshare
        # before that pass: wait for her factor to move from the 1.0 both start with (it
        # never does if the accounts ds01 made give fair share no say).
        def shares() -> dict[str, tuple[float, float]] | None:
            text = cluster.slurm_tool(
                "sshare", "--noheader", "--parsable2", "--accounts=phd",
                "--users=alice,carol", "--format=User,RawUsage,FairShare",
            )  # fmt: skip
            rows = [line.split("|") for line in text.splitlines()]
            found = {u: (float(raw), float(factor)) for u, raw, factor in rows if u}
            applied = len(found) == 2 and found["alice"][0] > 0 and found["carol"][1] > 0
            return found if applied and found["alice"][1] < 1.0 else None

        found = wait_on_cluster("a fair-share pass after alice's usage, in sshare", shares)
        (_, alice_factor), (carol_usage, carol_factor) = found["alice"], found["carol"]
        assert carol_usage == 0, found
        assert alice_factor < carol_factor, found
        jobs = _waiting_jobs(cluster, "fair", ("alice", "carol"))
        try:
            order, priority = _priority_order(cluster, jobs)
            assert order == ["carol", "alice"], (priority, found)
            # The same QOS (priority): only fair share (weight 2000) sets them apart.
            assert 0 < priority["carol"] - priority["alice"] <= 2000, priority
        finally:
            cluster.slurm_tool("scancel", ",".join(str(job) for job in jobs.values()))
