"""Docker images for ds01: local images, builds, pulls, tags and ds01's owned images.

``DockerImages`` is the image half of :class:`ds01.runtime.docker.DockerRuntime` (which
inherits it): the same low-level ``APIClient`` (``self.api``), one Engine API call per
action, docker-py errors translated to ds01 errors (``ds01.runtime.docker_errors``).
Stateless: any thread may call it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from ds01.model import labels as L
from ds01.runtime.cgroups import CFS_PERIOD_US, cfs_quota_us
from ds01.runtime.docker_errors import docker_errors, raise_streamed_error
from ds01.runtime.engine_socket import EngineSocket

if TYPE_CHECKING:
    import docker


@dataclass(frozen=True)
class LocalImage:
    """A local image: its default command (entrypoint + cmd), its labels, id and tags."""

    command: tuple[str, ...]
    labels: dict[str, str]
    id: str = ""
    tags: tuple[str, ...] = ()

    def owner(self) -> str | None:
        """The user the image was built for (``ds01.image.owner``), if any."""
        return self.labels.get(L.IMAGE_OWNER) or None


@dataclass(frozen=True)
class BuildLimits:
    """What each container of an image build may use; ``None`` means no limit.

    ``cgroup_parent`` places the build's containers, like a user's own containers, under the
    user's cgroup parent, so that the user's totals hold during the build too."""

    cgroup_parent: str
    memory_bytes: int | None = None
    cpus: float | None = None
    shm_size_bytes: int | None = None
    network_mode: str = "none"  # or the user's own network


@dataclass(frozen=True)
class OwnedImage:
    """A local image labelled as built for a user (``ds01.image.owner``)."""

    id: str
    tags: tuple[str, ...]
    owner: str
    created: int  # seconds since the epoch
    size_bytes: int


class MessageStream:
    """Docker's JSON progress messages (a build's or a pull's), one dict at a time.

    ``close`` (from another thread) ends the stream: Docker cancels a build whose client
    went away."""

    def __init__(self, what: str, messages: Iterator[Any], response: Any = None) -> None:
        self._what = what
        self._messages = messages
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with docker_errors(self._what):
            for message in self._messages:
                if isinstance(message, dict):
                    yield message

    def close(self) -> None:
        # Already closed, or the connection is gone: nothing left to end.
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._response.close()


class DockerImages:
    """Images: what is local, builds and pulls (as ``MessageStream``), tags, removal."""

    engine: EngineSocket

    @property
    def api(self) -> docker.APIClient:
        """docker-py's client: ``DockerRuntime`` makes it on first use."""
        raise NotImplementedError

    def local_image_tags(self) -> set[str]:
        """Every ``repo:tag`` present locally (read through ``engine``: ds01d's start asks)."""
        with docker_errors("listing images"):
            tags: set[str] = set()
            for image in self.engine.get("/images/json"):
                tags.update(t for t in image.get("RepoTags") or () if t != "<none>:<none>")
            return tags

    def tags_in(self, repository_prefix: str) -> set[str]:
        """Every local ``repo:tag`` whose repository starts with ``repository_prefix``
        (e.g. ``ds01-kept/``)."""
        with docker_errors("listing images"):
            images = self.api.images(filters={"reference": f"{repository_prefix}*"})
            return {
                tag
                for image in images
                for tag in image.get("RepoTags") or ()
                if tag.startswith(repository_prefix)
            }

    def local_image(self, ref: str) -> LocalImage | None:
        """What ds01 needs to know about a local image, or ``None`` if it is not here."""
        with docker_errors(f"image {ref}"):
            import docker.errors

            try:
                attrs = self.api.inspect_image(ref)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return None
        config = attrs.get("Config") or {}
        return LocalImage(
            command=tuple(config.get("Entrypoint") or ()) + tuple(config.get("Cmd") or ()),
            labels=dict(config.get("Labels") or {}),
            id=str(attrs.get("Id") or ""),
            tags=tuple(attrs.get("RepoTags") or ()),
        )

    def remove_image(self, ref: str) -> None:
        """Remove (untag) an image; one still in use stays. Fails soft: a leftover image
        costs disk, not correctness."""
        import docker.errors
        import requests.exceptions

        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            self.api.remove_image(ref)

    def build_image(
        self,
        context: IO[bytes],
        *,
        dockerfile: str,
        labels: dict[str, str],
        limits: BuildLimits,
        pull: bool = False,
        nocache: bool = False,
    ) -> MessageStream:
        """Start a build (legacy builder) from ``context``, a tar of the build context.

        Intermediate containers are always removed (``rm``, ``forcerm``); ``labels`` are set
        on the final image after every instruction of the Dockerfile, so they override any
        ``LABEL`` of the same key. docker-py's ``build`` has no cgroup parent or CPU quota,
        so the Engine API's ``/build`` is called directly. The image is left untagged: the
        caller tags it (``tag_image``) once it has checked it.

        What the legacy builder of Docker 20.10 cannot restrict for a step's container:
        capabilities (Docker's default set, ``NET_RAW`` included: no ``cap_drop`` on
        ``/build``), ``no-new-privileges`` and seccomp/AppArmor profiles (``securityopt`` is
        refused on Linux: "does not support setting security options on build"), the user
        (steps run as the image's ``USER``, root by default) and a per-container pids limit
        (none on ``/build``: ds01 sets ``pids.max`` on ``limits.cgroup_parent`` instead).
        """
        params: dict[str, Any] = {
            "dockerfile": dockerfile,
            "version": "1",  # the classic builder: ds01's base-image policy reads as it does
            "rm": "1",
            "forcerm": "1",
            "pull": "1" if pull else "0",
            "nocache": "1" if nocache else "0",
            "q": "0",
            "labels": json.dumps(labels),
            "cgroupparent": limits.cgroup_parent,
            "networkmode": limits.network_mode,
        }
        if limits.memory_bytes is not None:
            # Same as containers: no swap beyond the memory limit.
            params["memory"] = limits.memory_bytes
            params["memswap"] = limits.memory_bytes
        if limits.cpus is not None:
            params["cpuperiod"] = CFS_PERIOD_US
            params["cpuquota"] = cfs_quota_us(limits.cpus)
        if limits.shm_size_bytes is not None:
            params["shmsize"] = limits.shm_size_bytes
        url = f"{self.api.base_url}/v{self.api.api_version}/build"
        with docker_errors("starting an image build"):
            response = self.api.post(
                url,
                params=params,
                data=context,
                headers={"Content-Type": "application/x-tar"},
                stream=True,
                timeout=None,  # a step may print nothing for a long time
            )
            raise_streamed_error(response)
        from docker.utils.json_stream import json_stream, stream_as_text

        chunks = response.iter_content(chunk_size=None)
        return MessageStream("building an image", json_stream(stream_as_text(chunks)), response)

    def pull_image(self, reference: str) -> MessageStream:
        """Start pulling ``reference`` (``:latest`` when it has no tag)."""
        with docker_errors(f"pulling {reference}"):
            messages = self.api.pull(reference, stream=True, decode=True)
        return MessageStream(f"pulling {reference}", iter(messages))

    def tag_image(self, image_id: str, repository: str, tag: str) -> None:
        """Point ``repository:tag`` at ``image_id`` (moving the tag if it exists)."""
        with docker_errors("tagging an image"):
            self.api.tag(image_id, repository, tag, force=True)

    def owned_images(self, owner: str | None = None) -> list[OwnedImage]:
        """Local images labelled as built for ``owner`` (``None``: for anyone)."""
        with docker_errors("listing images"):
            label = L.IMAGE_OWNER if owner is None else f"{L.IMAGE_OWNER}={owner}"
            found = []
            for image in self.api.images(filters={"label": label}):
                labels = image.get("Labels") or {}
                tags = tuple(t for t in image.get("RepoTags") or () if t != "<none>:<none>")
                found.append(
                    OwnedImage(
                        id=str(image.get("Id", "")),
                        tags=tags,
                        owner=str(labels.get(L.IMAGE_OWNER, "")),
                        created=int(image.get("Created") or 0),
                        size_bytes=int(image.get("Size") or 0),
                    )
                )
            return found

    def delete_image(self, ref: str) -> None:
        """Remove (untag) ``ref``; errors are raised (``Conflict`` when in use), unlike
        ``remove_image``."""
        with docker_errors(f"removing image {ref}"):
            self.api.remove_image(ref)
