"""``DockerRuntime.run_to_end``, the one-shot container of ``ds01 admin gpu-check``: its
command runs, its output and exit code come back, and the container is gone afterwards."""

from __future__ import annotations

from typing import Any

from ds01.runtime.docker import ContainerSpec, DockerRuntime


def test_a_one_shot_container_gives_its_output_and_exit_code_and_is_removed(
    docker_client: Any, test_image: str
) -> None:
    runtime = DockerRuntime(docker_client.api)
    spec = ContainerSpec(
        docker_name="ds01-gpu-check-test",
        image=test_image,
        user="65534:65534",
        hostname="ds01-gpu-check",
        labels={},
        environment={"NVIDIA_VISIBLE_DEVICES": "GPU-x"},
        mounts=(),
        cgroup_parent="",
        network="none",
        working_dir="/",
        command=("sh", "-c", 'echo "UUID: $NVIDIA_VISIBLE_DEVICES as $(id -u)"; exit 3'),
    )

    code, output = runtime.run_to_end(spec, timeout_seconds=30)

    assert code == 3
    assert output.strip() == "UUID: GPU-x as 65534"
    assert not docker_client.api.containers(all=True, filters={"name": "ds01-gpu-check-test"})
