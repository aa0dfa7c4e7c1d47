"""Ray, set up safely: an optional package, a local instance on loopback only, a cluster
address checked before anything starts.

What Ray 2.x needs for that (checked on Ray 2.60 with /proc/net/tcp; tests/grid re-check it on
every run):

- Ray binds its servers to all interfaces and advertises the machine's address, even with
  ``_node_ip_address="127.0.0.1"`` (it turns a loopback address into the "remotely reachable"
  one). Its local-only mode, meant for laptops (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), makes
  every process resolve and bind 127.0.0.1 and skips the probe for an outward address.
- ``RAY_USAGE_STATS_ENABLED=0``: no usage report is sent.
- Token authentication (on by default for a new local instance since Ray 2.5x) writes a token to
  ``~/.ray/auth_token``. A token made for this instance only and passed in the environment
  (``RAY_AUTH_TOKEN``) keeps authentication on and writes nothing to the home folder.
- Ray's session files (sockets, logs) go to a temporary folder of this instance's own, removed
  when it stops; ``/tmp/ray`` is not touched.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import tempfile

from tinycl.errors import TinyclError

INSTALL_HINT = '--executor ray needs Ray, an optional extra: pip install -e ".[ray]" (or pip install "ray>=2.50,<3")'

# How long an unreachable --ray-address may take to be refused (a firewalled address never answers).
PROBE_TIMEOUT_S = 5.0


def ray_available() -> bool:
    """Is Ray importable (without importing it: that takes half a second)."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def require_ray() -> None:
    if not ray_available():
        raise TinyclError(INSTALL_HINT)


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``ray://HOST:PORT`` (Ray Client) -> (host, port); anything else is refused."""
    rest = address.removeprefix("ray://")
    host, sep, port_text = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 < port < 65536:
        raise TinyclError(f"--ray-address {address!r} must be HOST:PORT (a Ray head's GCS address, e.g. "
                          "10.0.0.5:6379, as `ray start --head` prints it) or ray://HOST:PORT")
    return host, port


def probe(address: str) -> None:
    """Refuse an address where nothing listens, in one line and within seconds, before Ray tries
    (ray.init retries an unreachable cluster for a minute or more)."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise TinyclError(f"--ray-address {address}: cannot reach a Ray cluster there ({reason}); start one "
                          "with `ray start --head`, or drop --ray-address to run on a local Ray instance") from None


def connect(address: str) -> None:
    """Join the existing cluster at ``address`` as its driver."""
    require_ray()
    probe(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, AuthenticationError, version mismatch, ...
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise TinyclError(f"--ray-address {address}: Ray could not connect: {text[:300]}") from None


# Set while the local instance lives; the driver's environment is put back when it stops.
LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback only (module docstring)
    "RAY_USAGE_STATS_ENABLED": "0",
}


class LocalRay:
    """A Ray instance of this process's own, on 127.0.0.1, stopped and cleaned up by ``stop``."""

    def __init__(self, num_cpus: int):
        import secrets

        require_ray()
        self.saved: dict[str, str | None] = {}
        self.saved_constant: bool | None = None
        self.started = False  # stop() shuts down only an instance this object started
        env = dict(LOCAL_ENV)
        if "RAY_AUTH_MODE" not in os.environ:  # the user's choice wins
            env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        for name, value in env.items():
            self.saved[name] = os.environ.get(name)
            os.environ[name] = value
        # A short path: Ray's Unix sockets live below it (at most 107 bytes for a socket path).
        self.temp_dir = tempfile.mkdtemp(prefix="tinycl-ray-")
        try:
            self._start(num_cpus)
        except BaseException:
            self.stop()
            raise

    def _start(self, num_cpus: int) -> None:
        import ray
        from ray._private import ray_constants

        # Read from the environment when Ray is first imported: one imported before the variable
        # was set (by another part of this process) must learn it too.
        self.saved_constant = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        if ray.is_initialized():
            raise TinyclError("Ray is already initialized in this process: pass its --ray-address instead")
        self.started = True
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=self.temp_dir,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
        gcs = ray.get_runtime_context().gcs_address
        if not gcs.startswith("127."):
            raise TinyclError(f"the local Ray instance listens on {gcs}, not on loopback: stopped")

    def stop(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
        if self.saved_constant is not None:  # a later --ray-address driver must advertise its address
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = self.saved_constant
            self.saved_constant = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.saved = {}


def start_local_ray(num_cpus: int) -> LocalRay:
    return LocalRay(num_cpus)
