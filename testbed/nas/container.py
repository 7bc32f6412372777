"""The docker NAS: the netns NAS's userspace servers (nfs-ganesha with rpcbind, tgt, vblade) in a Docker
container made with the Docker SDK from our own image (images/nas-docker/container.yaml: mmdebstrap into
a tarball, imported; no registry), labelled with the run tag and removed by label.

Networking never touches the host's main namespace: the container starts with `network_mode=none`,
its network namespace is named `<tag>-nas` (`ip netns attach`), and the network builder puts the NAS's
veth end there as for a netns NAS. No `--privileged`: each server gets the capabilities it needs.
Commands and servers run through `docker exec`, so they live in the container's namespaces, cgroup and
capability set; a server's process group is ended inside the container, and its state is read on the
host through /proc.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from testbed.host import proc
from testbed.host.cleanup import Cleanup
from testbed.errors import TestbedError
from testbed.nas.base import Backend, NasSetup, Say, Traits
from testbed.nas.host import HostNas, make_root, netns_name
from testbed.host.paths import data_dir, repo_root

if TYPE_CHECKING:
    from testbed.config.scenario import Scenario

LABEL = "org.netswap.tag"
REPO = "netswap-nas"
# What the servers need, no more (no --privileged: it fails where the host lacks CAP_SYS_RESOURCE, and
# without SYS_RESOURCE ganesha and tgtd keep their default open-file limits, which they say and go on).
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "SETUID", "SETGID", "KILL",  # ganesha's file ops
        "SYS_ADMIN",  # ganesha's VFS FSAL calls name_to_handle_at: Docker's default seccomp allows it only with SYS_ADMIN
        "NET_BIND_SERVICE", "NET_RAW", "NET_ADMIN"]  # rpcbind on 111, vblade's raw socket, ip in its namespace
PIDS = "/run/tb"  # inside the container: <server>.pid of each server's process group


def client() -> Any:
    """The Docker SDK's client, or a TestbedError that says why there is none."""
    try:
        import docker  # the docker backend only
    except ImportError:
        raise TestbedError("nas.backend docker needs the `docker` Python package (./bootstrap installs it)") from None
    try:
        c = docker.from_env(timeout=30)
        c.ping()
        return c
    except Exception as e:
        raise TestbedError(f"nas.backend docker: no Docker engine answers ({e}); start one (./bootstrap starts "
                           "`dockerd --iptables=false --bridge=none` where none runs)") from None


def recipe_path() -> Path:
    return repo_root() / "images" / "nas-docker" / "container.yaml"  # not recipe.yaml: that names a VM image


def image_tag() -> str:
    return f"{REPO}:{hashlib.sha256(recipe_path().read_bytes()).hexdigest()[:16]}"


def ensure_image(dk: Any, say: Callable[[str], None]) -> str:
    """Our image, built once per recipe hash: mmdebstrap into a tarball, then imported."""
    import docker  # only reached with the SDK present (client() checked)

    tag = image_tag()
    try:
        dk.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    r = yaml.safe_load(recipe_path().read_text())
    say(f"building {tag} (mmdebstrap {r['suite']}, {len(r['packages'])} packages, then docker import)")
    tar = data_dir() / f".{REPO}-{os.getpid()}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc.run(["mmdebstrap", "--mode=root", f"--variant={r['variant']}", "--include=" + ",".join(r["packages"]),
                  r["suite"], str(tar), *r["sources"]], timeout=1800,
                 hint=f"is the package mirror in {recipe_path()} reachable?")
        repo, _, version = tag.partition(":")
        with open(tar, "rb") as f:
            dk.api.import_image_from_data(f.read(), repository=repo, tag=version, changes=['CMD ["sleep", "infinity"]'])
    finally:
        tar.unlink(missing_ok=True)
    return tag


def start_container(tag: str, undo: Cleanup, say: Callable[[str], None]) -> tuple[Any, int]:
    """The run's NAS container (no network), its namespace named <tag>-nas for the network builder."""
    dk = client()
    image = ensure_image(dk, say)
    root = make_root(tag, undo, "docker")
    c = dk.containers.create(image, ["sleep", "infinity"], name=netns_name(tag), network_mode="none",
                             cap_drop=["ALL"], cap_add=CAPS, labels={LABEL: tag}, init=True,
                             volumes={str(root): {"bind": str(root), "mode": "rw"}})
    undo.push(f"container {c.name}", remove, c)
    try:
        c.start()
    except Exception as e:
        raise TestbedError(f"nas.backend docker: container {c.name} did not start: {e}") from None
    c.reload()
    pid = int(c.attrs["State"]["Pid"])
    os.makedirs("/run/netns", exist_ok=True)
    proc.run(["ip", "netns", "attach", netns_name(tag), str(pid)], timeout=30)
    undo.push(f"namespace name {netns_name(tag)}", unname, netns_name(tag))
    return c, pid


def unname(ns: str) -> None:
    """Forget the name (the namespace itself goes with the container)."""
    proc.run(["ip", "netns", "delete", ns], check=False, timeout=30)


def remove(c: Any) -> None:
    try:
        c.remove(force=True)
    except Exception:  # already gone
        pass


def remove_by_label(dead: Callable[[str], bool], dry_run: bool = False) -> list[str]:
    """Containers of ours (by label) whose run is gone; removed (unless dry_run). Nothing when no engine answers."""
    try:
        dk = client()
    except TestbedError:
        return []
    out = []
    for c in dk.containers.list(all=True, filters={"label": LABEL}):
        tag = c.labels.get(LABEL, "")
        if dead(tag):
            if not dry_run:
                remove(c)
            out.append(f"container {c.name} (run {tag})")
    return out


class DockerNas(HostNas):
    traits = Traits("docker", "container", own_kernel=False, detached_servers=False, shares_host_run=False)

    def __init__(self, tag: str, container: Any, pid: int, undo: Cleanup):
        super().__init__(tag, data_dir() / tag, undo)
        self.container, self.pid = container, pid
        self.boot = {"mode": "docker", "image": container.image.tags[0] if container.image.tags else "",
                     "container": container.name, "caps": CAPS}

    def prefix(self, argv: list[str]) -> list[str]:
        return ["docker", "exec", "-i", self.container.name, *argv]

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}").exists()

    def probe_prefix(self, argv: list[str]) -> list[str]:
        # Probes look from the host into the container's network namespace (named <tag>-nas): a `docker
        # exec` a second costs more than a probe may take.
        return HostNas.prefix(self, argv)

    def launch(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        # In its own process group inside the container, its leader's pid in PIDS/<name>.pid.
        script = 'mkdir -p "$1" && echo $$ > "$1/$2.pid" && shift 2 && exec "$@"'
        with open(log, "ab") as out:
            # setsid -w: a new process group inside, and the exec stays attached until the server ends
            return subprocess.Popen(self.prefix(["setsid", "-w", "sh", "-c", script, "sh", PIDS, name, *argv]),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=proc.die_with_parent)

    def signal_group(self, name: str, sig: int, p: subprocess.Popen[bytes]) -> None:
        inner = self.inner_pid(name)
        if inner:
            subprocess.run(self.prefix(["kill", f"-{sig}", "--", f"-{inner}"]), capture_output=True, timeout=15)

    def members(self, name: str, p: subprocess.Popen[bytes]) -> list[int]:
        host = self.host_pid(name)
        return [host] if host and p.poll() is None else []

    def leader(self, name: str, p: subprocess.Popen[bytes]) -> int | None:
        return self.host_pid(name)

    def host_path(self, path: str) -> Path:
        # /var/run is an absolute link to /run in Debian: through /proc/PID/root it would resolve on the host
        inside = str(path).replace("/var/run/", "/run/", 1) if str(path).startswith("/var/run/") else str(path)
        return Path(f"/proc/{self.pid}/root{inside}")

    def inner_pid(self, name: str) -> int | None:
        try:
            return int(Path(f"/proc/{self.pid}/root{PIDS}/{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def host_pid(self, name: str) -> int | None:
        """The host's pid of a server's leader: the process in the container's pid namespace whose
        innermost pid (NSpid) is the one it wrote."""
        inner = self.inner_pid(name)
        if inner is None:
            return None
        try:
            ns = os.readlink(f"/proc/{self.pid}/ns/pid")
        except OSError:
            return None
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if os.readlink(d / "ns" / "pid") != ns:
                    continue
                nspid = next(ln for ln in (d / "status").read_text().splitlines() if ln.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if int(nspid.split()[-1]) == inner:
                return int(d.name)
        return None


class DockerBackend(Backend):
    """The container comes first: the network builder puts the NAS's veth end in its namespace."""

    traits = DockerNas.traits

    def __init__(self, sc: Scenario, tag: str):
        super().__init__(sc, tag)
        self._made: tuple[Any, int] | None = None

    def netns(self) -> str:
        return netns_name(self.tag)

    def before_network(self, undo: Cleanup, say: Say) -> None:
        self._made = start_container(self.tag, undo, say)

    def describe(self) -> str:
        return f"docker: userspace servers in container {netns_name(self.tag)}"

    def start(self, s: NasSetup) -> DockerNas:
        if self._made is None:
            raise TestbedError("docker NAS: started before its container was made (before_network)")
        return DockerNas(self.tag, *self._made, s.undo)
