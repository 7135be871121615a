"""The ds01d service: the shared context and the collaborators every request reaches.

``Ds01Service`` is the imperative shell around the pure core. It is the daemon's
``DaemonContext`` (runtime, store, events, clock, configuration, the allocation lock and
its rule: see ``ds01.daemon.context``) and owns one instance of each collaborator:

- ``access``: who calls, whom a request is about, which container it names;
- ``views``: ``container-list``, ``gpu-status``, ``check-limits``;
- ``enforcement``: users' totals on their cgroup parents, memory and runtime checks;
- ``launcher``: binds, host ports and network checked right before a start;
- ``queue_desk``: joining the GPU queue, giving released devices back;
- ``creation``: a container created atomically with its devices, and its intent;
- ``reacquire``: devices again for a container whose devices were released;
- ``containers``: start, stop, remove, retire;
- ``reconciler``: what the last ds01d left half-done, settled at start.

Each collaborator's module docstring is its contract. The few methods here are the entry
points of the API's routes; everything else is called on the collaborator that owns it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from ds01.config.loader import Ds01Config
from ds01.core.docker_create import RunOptions
from ds01.core.gpu_use import UnmanagedUse
from ds01.daemon import schemas as api
from ds01.daemon.access import Access
from ds01.daemon.containers import ContainerOps, StartOptions
from ds01.daemon.context import DaemonContext, DaemonDependencies
from ds01.daemon.create_intents import CreateIntents
from ds01.daemon.creation import Creation, Gatekeepers
from ds01.daemon.identity import Caller
from ds01.daemon.launch import Launcher
from ds01.daemon.limits_enforcement import LimitsEnforcement
from ds01.daemon.mig_on_demand import MigOnDemand
from ds01.daemon.prepared import Created, Queued
from ds01.daemon.queue_desk import QueueDesk
from ds01.daemon.reacquire import Reacquire
from ds01.daemon.reconcile import StartupReconciler
from ds01.daemon.views import Views
from ds01.errors import Ds01Error
from ds01.runtime.identity import PeerCredentials

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11


class Ds01Service(DaemonContext):
    """Business logic of ds01d. Thread-safe; one instance per daemon.

    Args:
        given: what it is built from (``DaemonDependencies``: the adapters, the store, the
            event log; tests inject fakes there).
    """

    def __init__(self, given: DaemonDependencies) -> None:
        super().__init__(given)
        self.access = Access(self)
        self.enforcement = LimitsEnforcement(self)
        self.settings.on_limits_changed = self._limits_changed
        self.views = Views(self, self.access, self.enforcement)
        self.launcher = Launcher(self)
        self.queue_desk = QueueDesk(self)
        self.mig_on_demand = MigOnDemand(self)
        gates = Gatekeepers(
            self.access, self.enforcement, self.launcher, self.queue_desk, self.mig_on_demand
        )
        self.create_intents = CreateIntents(self)
        self.creation = Creation(self, gates, self.create_intents)
        self.reacquire = Reacquire(self, self.creation)
        self.containers = ContainerOps(self, gates, self.reacquire)
        self.reconciler = StartupReconciler(self, self.create_intents)

    @property
    def lifecycle_last_pass(self) -> datetime | None:
        """When the lifecycle loop's last pass ran (``status``), as the metrics read it."""
        return self.status.lifecycle_last_pass

    @property
    def unmanaged_gpu_use(self) -> tuple[UnmanagedUse, ...]:
        """Processes on the GPUs outside ds01's allocation (``status``), as the metrics
        read them."""
        return self.status.unmanaged_gpu_use

    def queue_changed(self) -> None:
        """Wake the dispatcher, every client waiting on the queue, and every create held
        by its client (``QueueDesk.held``)."""
        super().queue_changed()
        self.queue_desk.held.wake_all()

    def _limits_changed(self, config: Ds01Config) -> None:
        # Totals or group memberships may have changed: write them on the live parents.
        self.enforcement.apply_live_aggregates(config, "configuration changed")
        self.networks.hub_may_have_changed()  # the hub identities' firewall rules too

    # -- the routes' entry points ---------------------------------------------------------------

    def caller(self, creds: PeerCredentials, on_behalf_of: str | None = None) -> Caller:
        return self.access.caller(creds, on_behalf_of)

    def whoami(self, caller: Caller) -> api.WhoAmI:
        return self.access.whoami(caller)

    def list_containers(
        self, caller: Caller, *, all_users: bool = False, user: str | None = None
    ) -> list[api.ContainerInfo]:
        return self.views.list_containers(caller, all_users=all_users, user=user)

    def gpu_status(self, caller: Caller) -> api.GpuStatusResponse:
        return self.views.gpu_status(caller)

    def limits(
        self, caller: Caller, *, user: str | None = None, explain: bool = False
    ) -> api.LimitsResponse:
        return self.views.limits(caller, user=user, explain=explain)

    def create(
        self,
        caller: Caller,
        request: api.CreateContainerRequest,
        run: RunOptions | None = None,
    ) -> Created | Queued:
        """``Creation.create``: the caller confirms a ``Created`` with ``confirm_create``.

        ``request.start``: the container is started too, in the same request (one queued
        starts when its turn comes anyway); the ``Created`` then describes it running. A
        start that fails leaves it created, as a create then a start would: the create is
        confirmed, and the start's error raised, saying that it was created (and with
        ``details["created"]`` set, for a caller that removes what it made).
        """
        created = self.creation.create(caller, request, run)
        if not request.start or isinstance(created, Queued):
            return created
        try:
            started = self.containers.start(
                caller, created.info.docker_name, record=created.record
            )
        except BaseException as exc:
            self.confirm_create(created.request_id, created.info.docker_name)
            if isinstance(exc, Ds01Error):
                # An error of the start alone would read as if nothing had happened.
                exc.message = f"Created {created.info.name}, but it was not started: {exc.message}"
                exc.args = (exc.message,)
                exc.details = {**exc.details, "created": True}
            raise
        assert not isinstance(started, Queued)  # ``queue`` is not set
        return replace(created, info=started)

    def confirm_create(self, request_id: str, docker_name: str) -> None:
        self.create_intents.confirm_create(request_id, docker_name)

    def start(
        self, caller: Caller, name: str, **options: Unpack[StartOptions]
    ) -> api.ContainerInfo | Queued:
        return self.containers.start(caller, name, **options)

    def stop(self, caller: Caller, name: str, *, user: str | None = None) -> api.ContainerInfo:
        return self.containers.stop(caller, name, user=user)

    def remove(
        self, caller: Caller, name: str, *, user: str | None = None, force: bool = False
    ) -> api.ContainerInfo:
        return self.containers.remove(caller, name, user=user, force=force)

    def rename(self, caller: Caller, name: str, new_name: str) -> api.ContainerInfo:
        return self.containers.rename(caller, name, new_name)

    def retire(self, caller: Caller, name: str, request: api.RetireRequest) -> api.RetireResult:
        return self.containers.retire(caller, name, request)

    def commit(self, caller: Caller, name: str, keep_as: str) -> str:
        return self.containers.commit(caller, name, keep_as)


__all__ = ["Created", "Ds01Service", "Queued"]
