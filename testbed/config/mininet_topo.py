"""A Mininet `Topo` read as data: `topology: topologies/dumbbell.py:Dumbbell` (+ `topology_args`).

The class is instantiated (its `build` runs, nothing else of Mininet: no controller, no OVS), then
its hosts, switches and links with their TCLink options are mapped to our topology model, which
our pyroute2 builder makes in the run's namespace. Hosts named `client` and `nas` (or given
`role=...`) are those roles; any other host is a traffic host (a namespace with a veth). A link
between two switches is a trunk. All switches share one subnet (one L2 segment, as in Mininet).

Options we honour: bw (Mbit/s, TBF), delay, jitter (netem), loss (%, netem), max_queue_size
(packets), mtu (ours). Any other option, or one this host cannot honour (delay without netem), is
a ConfigError that names the link and the option.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from testbed.config.strict import from_dict
from testbed.config.topology import Topology
from testbed.errors import ConfigError

SUBNET = "10.201.0.0/24"
HONOURED = ("bw", "delay", "jitter", "loss", "max_queue_size", "mtu")
BOOKKEEPING = {"node1", "node2", "port1", "port2", "key", "cls"}  # Mininet's own, not options


def is_mininet_ref(ref: str) -> bool:
    return bool(re.fullmatch(r".+\.py:[A-Za-z_]\w*", ref))


def _ms(value: Any, source: str, where: str) -> float:
    """Mininet's time strings ('5ms', '1s', '200us') or a number of ms."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s)?\s*", str(value))
    if not m:
        raise ConfigError(source, where, f"{value!r} is not a time (e.g. '5ms')")
    n = float(m.group(1))
    return {"us": n / 1000, "ms": n, "s": n * 1000, None: n}[m.group(2)]


def _conditions(opts: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    unknown = sorted(k for k in opts if k not in HONOURED and k not in BOOKKEEPING)
    if unknown:
        raise ConfigError(source, f"{where}.{unknown[0]}", f"the Mininet option {unknown[0]} is not honoured by this "
                          f"testbed (it honours {', '.join(HONOURED)})")
    out: dict[str, Any] = {}
    if opts.get("bw") is not None:
        out["rate_mbit"] = float(opts["bw"])
    if opts.get("delay") is not None:
        out["delay_ms"] = _ms(opts["delay"], source, f"{where}.delay")
    if opts.get("jitter") is not None:
        out["jitter_ms"] = _ms(opts["jitter"], source, f"{where}.jitter")
    if opts.get("loss") is not None:
        out["loss_pct"] = float(opts["loss"])
    if opts.get("max_queue_size") is not None:
        out["queue_packets"] = int(opts["max_queue_size"])
    if opts.get("mtu") is not None:
        out["mtu"] = int(opts["mtu"])
    return out


def load_class(ref: str, base: Path, source: str) -> type:
    file, _, cls_name = ref.rpartition(":")
    path = Path(file)
    if not path.is_absolute():
        path = base / path if (base / path).exists() else path
    if not path.is_file():
        raise ConfigError(source, "topology", f"no Mininet topology file {file!r} (looked for {path})")
    try:
        from mininet.topo import Topo  # only Mininet topologies need the package
    except ImportError:
        raise ConfigError(source, "topology", "a Mininet Topo needs the `mininet` Python package (./bootstrap installs it)") from None
    name = f"_tb_topo_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(source, "topology", f"{path}: {type(e).__name__}: {e}") from None
    cls = getattr(module, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Topo)):
        raise ConfigError(source, "topology", f"{path} has no mininet.topo.Topo subclass named {cls_name}")
    return cls


def to_data(topo: Any, name: str, source: str) -> dict[str, Any]:
    """Our topology's data (as a YAML topology file would give it) from a built Mininet Topo."""
    switches = list(topo.switches())
    hosts = [h for h in topo.hosts()]
    nodes: dict[str, dict[str, str]] = {}
    for h in hosts:
        info = topo.nodeInfo(h) or {}
        role = info.get("role") or (h if h in ("client", "nas") else "traffic")
        if role not in ("client", "nas", "traffic"):
            raise ConfigError(source, f"topology hosts.{h}.role", f"{role!r}: a host is a client, the nas or traffic")
        nodes[h] = {"kind": "host" if role == "traffic" else "vm", "role": role}
        extra = sorted(k for k in info if k != "role")
        if extra:
            raise ConfigError(source, f"topology hosts.{h}.{extra[0]}", f"the host option {extra[0]} is not honoured "
                              "(hosts take only role=client|nas|traffic)")
    links, trunks = [], []
    for i, (a, b, opts) in enumerate(topo.links(withInfo=True)):
        where = f"topology links[{i}] ({a}-{b})"
        cond = _conditions(opts, source, where)
        if a in switches and b in switches:
            trunks.append({"a": a, "b": b, **cond})
        elif a in switches or b in switches:
            host, sw = (b, a) if a in switches else (a, b)
            links.append({"node": host, "switch": sw, **cond})
        else:
            raise ConfigError(source, where, "a link between two hosts: here every host attaches to a switch")
    return {"name": name, "description": f"Mininet {type(topo).__name__} ({len(hosts)} hosts, {len(switches)} switches)",
            "nodes": nodes, "switches": {s: {"subnet": SUBNET} for s in switches}, "links": links, "trunks": trunks}


def load(ref: str, args: dict[str, Any], base: Path, source: str) -> Topology:
    cls = load_class(ref, base, source)
    try:
        topo = cls(**args)
    except TypeError as e:
        raise ConfigError(source, "topology_args", f"{cls.__name__}: {e}") from None
    except Exception as e:
        raise ConfigError(source, "topology", f"{cls.__name__}(**{args}) failed: {type(e).__name__}: {e}") from None
    data = to_data(topo, f"{Path(ref.rpartition(':')[0]).stem}:{cls.__name__}", source)
    return from_dict(Topology, {**data, "path": ref}, f"{source} (Mininet {ref})")
