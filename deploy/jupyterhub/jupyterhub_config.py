# JupyterHub on ds01: every server is a ds01 container on the user's quotas and GPUs.
# (docs/jupyterhub.md; install with `pip install ds01[jupyterhub]` into ds01's venv.)
#
#   install -d -o jupyterhub -g jupyterhub -m 0700 /var/lib/jupyterhub
#   install -m 0644 deploy/jupyterhub/jupyterhub_config.py /etc/jupyterhub/jupyterhub_config.py
#   install -m 0644 deploy/jupyterhub/jupyterhub.service /etc/systemd/system/
#
# The hub runs as its own Unix user `jupyterhub` (in the group `shadow`, so that PAM can
# check passwords without root), named in /etc/ds01/resource-limits.yaml:
#
#   hub:
#     users: [jupyterhub]
#
# ds01d then accepts its requests on behalf of a user, with that user's rights only.
# Settings a site may need to change come from the environment (the systemd unit's
# EnvironmentFile, /etc/default/jupyterhub):
#
#   DS01_HUB_PUBLIC_URL   where the proxy listens (default http://127.0.0.1:8000: put HTTPS
#                         in front, see docs/jupyterhub.md)
#   DS01_HUB_SUBDOMAIN_HOST  the hub's own address, e.g. https://hub.example.org, each user's
#                         servers then on a subdomain of it (https://alice.hub.example.org:
#                         wildcard DNS and certificate). Set it wherever users may not trust
#                         each other: without it every server shares the hub's origin, and a
#                         user who serves a page there (any user can: they control their
#                         container) can act in the hub and in other users' servers as
#                         whoever opens that page (docs/jupyterhub.md, "Per-user subdomains")
#   DS01_HUB_API_PORT     the hub's API port, which servers in containers call (8081)
#   DS01_HUB_CONNECT_IP   the host address containers reach the hub at (default: Docker's
#                         docker0 gateway, 172.17.0.1)
#   DS01_HUB_STATE_DIR    the hub's database and cookie secret (/var/lib/jupyterhub)
#   DS01_SOCKET           ds01d's socket (/run/ds01/ds01.sock)

import os

c = get_config()  # noqa: F821 - JupyterHub's config loader defines it

env = os.environ.get
state_dir = env("DS01_HUB_STATE_DIR", "/var/lib/jupyterhub")
api_port = int(env("DS01_HUB_API_PORT", "8081"))

# Real Unix users log in with their passwords (PAM).
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allow_all = True  # every local user ds01 serves may log in
c.PAMAuthenticator.open_sessions = False  # the hub is not root: no PAM sessions

# The proxy (configurable-http-proxy, `npm install -g configurable-http-proxy`).
c.JupyterHub.bind_url = env("DS01_HUB_PUBLIC_URL", "http://127.0.0.1:8000")
# Servers run in containers on users' own Docker networks: the hub's API must listen where
# they can reach it (a host address), not only on 127.0.0.1.
c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{api_port}"
c.JupyterHub.hub_connect_url = f"http://{env('DS01_HUB_CONNECT_IP', '172.17.0.1')}:{api_port}"

# Per-user subdomains (JupyterHub's "Security Overview"): each user's servers on an origin of
# their own, and, over HTTPS, the cookies locked to their host (`__Host-`), so that no server
# can set or read the hub's. `__Host-` cookies must be Secure: over plain HTTP (a test on
# *.localhost) browsers drop a server's login state cookie, so nobody could open a server.
# Without DS01_HUB_SUBDOMAIN_HOST the hub runs on one origin, safe only where users trust
# each other.
subdomain_host = env("DS01_HUB_SUBDOMAIN_HOST", "")
if subdomain_host:
    c.JupyterHub.subdomain_host = subdomain_host
    c.JupyterHub.cookie_host_prefix_enabled = not subdomain_host.startswith("http://")
else:
    import logging

    logging.getLogger("JupyterHub").warning(
        "DS01_HUB_SUBDOMAIN_HOST is not set: all servers share the hub's origin, and any "
        "user can act as whoever opens a page they serve (docs/jupyterhub.md)"
    )

# The ds01 spawner (entry point `ds01`).
c.JupyterHub.spawner_class = "ds01"
c.Ds01Spawner.socket_path = env("DS01_SOCKET", "")
c.JupyterHub.allow_named_servers = True
# A server may wait in ds01's GPU queue: the hub waits as long as a request may wait there.
c.Spawner.start_timeout = 24 * 3600
c.Spawner.http_timeout = 120
# ds01 stops idle servers (its idle and runtime limits see GPU work): the hub learns it by
# polling (one light request to ds01d per server each time). Until it does, its proxy still
# sends the server's pages to the stopped container's address on its user's network, which
# no other local user can take (no host port; docs/jupyterhub.md, "Where the hub reaches a
# server"): the poll only decides how soon the hub shows the server stopped. Servers outlive
# a restart of the hub, which finds them again.
c.Spawner.poll_interval = 10
c.JupyterHub.cleanup_servers = False

c.JupyterHub.db_url = f"sqlite:///{state_dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state_dir}/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = f"{state_dir}/jupyterhub-proxy.pid"
