"""Whether this host can serve GPUs, and only through ds01: pure checks over collected facts.

Used by ``ds01 admin doctor`` and ``ds01 admin gpu-check`` (``ds01.daemon.gpu_check``
collects the facts) and by ``ds01 admin setup`` (the driver option that closes the door).

**The door.** The NVIDIA driver makes ``/dev/nvidiactl`` and ``/dev/nvidia<N>`` mode 0666 by
default, so every local user can run CUDA on the host, outside every quota. The driver's
options ``NVreg_DeviceFileUID``, ``NVreg_DeviceFileGID`` and ``NVreg_DeviceFileMode`` set the
nodes' owner and mode when the module loads; with mode 0660 and a group that no user is in
(``GPU_DEVICE_GROUP``), only root can open them. The NVIDIA Container Toolkit's hook runs as
root and puts the nodes of the devices a container was given into that container, so
containers keep working.

**Docker's way to GPUs.** ``docker run --gpus`` (a ``DeviceRequest``, which is what ds01d
sends) is served by ``nvidia-container-runtime-hook`` found on dockerd's ``PATH``, or by CDI
specs in ``/etc/cdi`` or ``/var/run/cdi`` (Docker 25+). A Docker runtime named ``nvidia`` is
not enough on its own: it sets up containers that ask for it, not a ``DeviceRequest``.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ds01.core.findings import Finding

#: The group that owns the NVIDIA device nodes once ``ds01 admin setup`` closed the door.
#: Nobody is a member: only root (and so the container toolkit) opens the nodes.
GPU_DEVICE_GROUP = "ds01-gpu"
#: The modprobe file ``ds01 admin setup`` writes.
MODPROBE_FILE = "/etc/modprobe.d/ds01-nvidia.conf"
#: The mode of the device nodes the driver option sets.
DEVICE_NODE_MODE = 0o660
#: The program Docker's ``--gpus`` runs, and the directories of CDI specs.
NVIDIA_HOOK = "nvidia-container-runtime-hook"
CDI_DIRECTORIES = ("/etc/cdi", "/var/run/cdi")
#: The nodes that let a process use a GPU: the control node and one per GPU.
_DOOR_NODE = re.compile(r"(^|/)nvidia(ctl|[0-9]+)$")
#: How to load the driver again with the new options.
RELOAD_HINT = (
    "Load the nvidia modules again to apply it: stop what uses the GPUs (ds01d, "
    "nvidia-persistenced, DCGM), `modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia "
    "&& modprobe nvidia`, or reboot. Containers keep working: the NVIDIA Container Toolkit "
    "runs as root."
)


@dataclass(frozen=True)
class DeviceNode:
    """One ``/dev/nvidia*`` node as ``stat`` and NSS see it.

    Attributes:
        path: e.g. ``/dev/nvidia0``.
        mode: the permission bits (``stat.S_IMODE``).
        uid, gid: its owner and group.
        group: the group's name (``None``: no such group).
        group_members: the users in that group (listed and primary members), root left out.
    """

    path: str
    mode: int
    uid: int
    gid: int
    group: str | None = None
    group_members: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "group": self.group,
        }


@dataclass(frozen=True)
class DockerGpuAccess:
    """What lets Docker give a container a GPU.

    Attributes:
        hook: where ``nvidia-container-runtime-hook`` is on dockerd's ``PATH`` (``None``:
            not there).
        cdi_specs: the CDI spec files found (in ``CDI_DIRECTORIES``).
        runtimes: Docker's configured runtimes (``docker info``).
        path: the ``PATH`` searched (dockerd's, else ds01d's own).
    """

    hook: str | None
    cdi_specs: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    path: str = ""

    @property
    def can_serve(self) -> bool:
        return self.hook is not None or bool(self.cdi_specs)

    def to_dict(self) -> dict[str, object]:
        return {
            "can_serve": self.can_serve,
            "hook": self.hook,
            "cdi_specs": list(self.cdi_specs),
            "runtimes": list(self.runtimes),
        }


def modprobe_options(gid: int | str) -> str:
    """The text of ``MODPROBE_FILE`` for the device group ``gid`` (a placeholder text in a
    dry run, before the group exists)."""
    return (
        "# Written by `ds01 admin setup`: only root (and so the NVIDIA Container Toolkit,\n"
        "# which gives containers their GPUs) may open the NVIDIA device nodes; users run\n"
        f"# CUDA through ds01. Group {GPU_DEVICE_GROUP} has no members on purpose.\n"
        f"options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID={gid} "
        f"NVreg_DeviceFileMode={DEVICE_NODE_MODE:04o}\n"
    )


def door_nodes(nodes: Iterable[DeviceNode]) -> list[DeviceNode]:
    """The nodes that open a GPU to whoever can open them: ``nvidiactl`` and ``nvidia<N>``."""
    return [n for n in nodes if _DOOR_NODE.search(n.path)]


def open_to_everyone(nodes: Iterable[DeviceNode]) -> list[DeviceNode]:
    """The door nodes every local user may open (world-readable or -writable)."""
    return [n for n in door_nodes(nodes) if n.mode & (stat.S_IROTH | stat.S_IWOTH)]


def check_device_nodes(nodes: Sequence[DeviceNode]) -> Finding:
    """Whether a local user can open the GPUs outside ds01 (``warning``, with the fix).

    World-readable or -writable nodes let every user in; group access lets the group's
    members in. No node at all: no NVIDIA driver is loaded (ok: nothing to open).
    """
    fix = (
        f"`ds01 admin setup` writes {MODPROBE_FILE} (NVreg_DeviceFileMode=0660, group "
        f"{GPU_DEVICE_GROUP} with no members). {RELOAD_HINT}"
    )
    doors = door_nodes(nodes)
    if not doors:
        return Finding("gpu-device-nodes", "ok", "No /dev/nvidiactl or /dev/nvidia<N> here.")
    open_to_all = open_to_everyone(doors)
    if open_to_all:
        listed = ", ".join(f"{n.path} {n.mode:04o}" for n in open_to_all)
        return Finding(
            "gpu-device-nodes",
            "warning",
            f"Any local user can run CUDA on the host, outside every quota: {listed}.",
            fix,
        )
    members = sorted(
        {m for n in doors if n.mode & (stat.S_IRGRP | stat.S_IWGRP) for m in n.group_members}
    )
    if members:
        groups = sorted({n.group or str(n.gid) for n in doors})
        return Finding(
            "gpu-device-nodes",
            "warning",
            f"Members of {', '.join(groups)} can run CUDA on the host, outside every quota: "
            f"{', '.join(members)}.",
            f"Take them out of the group (gpasswd -d USER GROUP), or: {fix}",
        )
    modes = ", ".join(sorted({f"{n.mode:04o}" for n in doors}))
    return Finding(
        "gpu-device-nodes",
        "ok",
        f"Only root opens the NVIDIA device nodes ({len(doors)} node(s), mode {modes}).",
    )


def check_docker_gpu_access(access: DockerGpuAccess) -> Finding:
    """Whether Docker can give a container a GPU (``critical`` when it cannot)."""
    if access.hook is not None:
        return Finding(
            "nvidia-toolkit", "ok", f"Docker can give containers GPUs ({access.hook})."
        )
    if access.cdi_specs:
        return Finding(
            "nvidia-toolkit",
            "ok",
            f"Docker can give containers GPUs (CDI: {', '.join(access.cdi_specs)}).",
        )
    runtime = (
        " The Docker runtime 'nvidia' is configured, but it serves only containers run with "
        "--runtime=nvidia, not a GPU request (--gpus), which is what ds01 sends."
        if "nvidia" in access.runtimes
        else ""
    )
    return Finding(
        "nvidia-toolkit",
        "critical",
        f"Docker cannot give containers GPUs: no {NVIDIA_HOOK} on dockerd's PATH "
        f"({access.path or 'unknown'}) and no CDI spec in {' or '.join(CDI_DIRECTORIES)}."
        f"{runtime}",
        "apt-get install nvidia-container-toolkit (it puts the hook in /usr/bin), or "
        "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`; then restart dockerd.",
    )


# -- ds01 admin gpu-check -------------------------------------------------------------------

_LISTED_UUID = re.compile(r"UUID:\s*((?:GPU|MIG)-[0-9A-Za-z-]+)")


@dataclass(frozen=True)
class ContainerTest:
    """What the test container (``nvidia-smi -L`` on one device) gave.

    Attributes:
        device_uuid: the device it was given.
        exit_code: its exit code (``None``: it could not be run; ``error`` says why).
        output: what it printed.
        error: why it could not be run.
    """

    device_uuid: str
    exit_code: int | None = None
    output: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "device_uuid": self.device_uuid,
            "exit_code": self.exit_code,
            "output": self.output,
            "error": self.error,
            "listed": list(listed_uuids(self.output)),
        }


@dataclass(frozen=True)
class GpuCheckFacts:
    """What ``ds01 admin gpu-check`` collected.

    Attributes:
        backend: ``nvml`` or ``simulated`` (``gpu-config.yaml``).
        kernel_driver: the loaded NVIDIA kernel module's version line (``None``: none).
        driver_version, nvml_version, cuda_version: as NVML gives them (``None``: unknown).
        gpus: physical GPUs; devices: allocatable devices (their count matters here).
        mig_without_instances: indexes of GPUs with MIG on and no instance.
        inventory_message: the backend's word on what is missing.
        devices_without_telemetry: devices (UUIDs) for which NVML gave no value at all.
        nodes: the ``/dev/nvidia*`` nodes.
        docker: Docker's way to GPUs.
        container_test: the test container's result (``None``: not run).
        container_test_skipped: why it was not run, when it should have been.
    """

    backend: str
    kernel_driver: str | None
    driver_version: str | None
    nvml_version: str | None
    cuda_version: str | None
    gpus: int
    devices: int
    mig_without_instances: tuple[int, ...]
    inventory_message: str | None
    devices_without_telemetry: tuple[str, ...]
    nodes: tuple[DeviceNode, ...]
    docker: DockerGpuAccess
    container_test: ContainerTest | None = None
    container_test_skipped: str | None = None


def listed_uuids(output: str) -> tuple[str, ...]:
    """The GPU and MIG UUIDs ``nvidia-smi -L`` printed, in order."""
    return tuple(_LISTED_UUID.findall(output))


def check_container_test(test: ContainerTest) -> Finding:
    """Whether the container saw exactly the device it was given (a MIG instance appears
    under its GPU: that GPU line is not a device of its own)."""
    uuid = test.device_uuid
    if test.exit_code is None:
        return Finding(
            "container-test",
            "critical",
            f"A container on {uuid} could not run: {test.error}.",
            "Run `docker run --rm --gpus device=UUID IMAGE nvidia-smi -L` to see Docker's "
            "own error.",
        )
    listed = listed_uuids(test.output)
    devices = [u for u in listed if u.startswith("MIG-") or not uuid.startswith("MIG-")]
    if test.exit_code == 0 and devices == [uuid]:
        return Finding(
            "container-test", "ok", f"A container given {uuid} sees exactly it (nvidia-smi -L)."
        )
    shown = ", ".join(listed) or "no device"
    return Finding(
        "container-test",
        "critical",
        f"A container given {uuid} saw {shown} (nvidia-smi -L exit {test.exit_code}): "
        f"{test.output.strip()[:300]}",
        "Check the NVIDIA Container Toolkit (`nvidia-ctk --version`, its hook or CDI specs) "
        "and that the image has a C library (nvidia-smi is injected into it).",
    )


def _driver_finding(facts: GpuCheckFacts) -> Finding:
    versions = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("driver", facts.driver_version),
            ("NVML", facts.nvml_version),
            ("CUDA", facts.cuda_version),
        )
        if value
    )
    if facts.kernel_driver is None and facts.driver_version is None:
        return Finding(
            "driver",
            "critical",
            "No NVIDIA driver on this machine (no /proc/driver/nvidia/version).",
            "Install the NVIDIA driver and load it (`modprobe nvidia`), then check "
            "`nvidia-smi`.",
        )
    return Finding("driver", "ok", f"NVIDIA {versions or facts.kernel_driver}.")


def _backend_findings(facts: GpuCheckFacts) -> list[Finding]:
    if facts.backend != "nvml":
        return [
            Finding(
                "backend",
                "critical",
                f"GPUs are {facts.backend} (gpu-config.yaml backend: {facts.backend}): "
                "containers get stand-ins, not real GPUs.",
                "On a GPU server set `backend: nvml` in gpu-config.yaml (ds01d reloads it).",
            )
        ]
    found = [Finding("backend", "ok", "GPUs come from the NVIDIA driver (NVML).")]
    if facts.devices == 0:
        found.append(
            Finding(
                "gpus",
                "critical",
                f"No GPU device to allocate. {facts.inventory_message or ''}".strip(),
                "Check `nvidia-smi -L`.",
            )
        )
    else:
        found.append(
            Finding("gpus", "ok", f"{facts.gpus} GPU(s), {facts.devices} allocatable device(s).")
        )
    if facts.mig_without_instances:
        indexes = ", ".join(map(str, facts.mig_without_instances))
        found.append(
            Finding(
                "mig",
                "warning",
                f"GPU {indexes}: MIG is on and no instance exists, so nothing runs there.",
                "Set mig_layout in gpu-config.yaml and run `ds01 admin mig apply` (gpu-check "
                "never changes MIG).",
            )
        )
    if facts.devices_without_telemetry:
        found.append(
            Finding(
                "telemetry",
                "warning",
                "NVML gives no telemetry for "
                f"{', '.join(facts.devices_without_telemetry)}: idle detection and energy "
                "cannot see them.",
            )
        )
    return found


def gpu_check_findings(facts: GpuCheckFacts) -> list[Finding]:
    """Every finding of ``ds01 admin gpu-check`` (exit code: ``core.findings.exit_code``):
    2 when the machine cannot serve real GPUs through ds01 (no driver, simulated GPUs, no
    device, Docker without the toolkit, a test container that does not see its device);
    1 with warnings (device nodes open to users, MIG without instances, no telemetry, no
    free device to test on); 0 otherwise."""
    findings = [_driver_finding(facts), *_backend_findings(facts)]
    findings.append(check_device_nodes(facts.nodes))
    findings.append(check_docker_gpu_access(facts.docker))
    if facts.container_test is not None:
        findings.append(check_container_test(facts.container_test))
    elif facts.container_test_skipped:
        findings.append(
            Finding(
                "container-test",
                "warning",
                f"No test container was run: {facts.container_test_skipped}.",
            )
        )
    return findings
