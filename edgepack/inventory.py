"""Devices by name and group: ``--device @group``, ``--device pi4,pi5``, ``edgepack devices``.

An inventory is read from ``--inventory FILE`` (or ``$EDGEPACK_INVENTORY``), else from ``edgepack.toml`` in
the current directory. Three formats, told apart by the file name as Ansible does:

- ``*.toml``: edgepack's own ``[devices]`` table, one sub-table per device::

      [devices.pi4]
      host = "192.168.1.20"        # default: the device's name (an ssh_config alias works too); "local"
      user = "pi"                  # this machine
      port = 22
      identity = "~/.ssh/id_pi"    # relative paths: relative to the inventory file
      python = "/home/pi/venv/bin/python"
      remote_dir = ".cache/edgepack"
      groups = ["pis", "arm64"]
      labels = { soc = "bcm2711", ram = "4GB" }

- ``*.yml`` / ``*.yaml`` / ``*.json``: an Ansible YAML inventory (``all:``, ``hosts:``, ``vars:``,
  ``children:``), read with PyYAML's ``safe_load``;
- anything else: an Ansible INI inventory (``[group]``, ``[group:vars]``, ``[group:children]``, host lines
  ``name key=value ...`` split like a shell line, values read as Python literals), as Ansible's ini plugin does.

From Ansible inventories edgepack reads ``ansible_host``, ``ansible_user``, ``ansible_port``,
``ansible_ssh_private_key_file``, ``ansible_python_interpreter`` (``auto*`` = the default), ``ansible_connection``
(``local`` = this machine; ssh, paramiko and smart are SSH; anything else is refused when the device is
selected) and its own ``edgepack_remote_dir`` and ``edgepack_labels`` (a mapping); the ``ansible_ssh_*`` spellings
too. Variables apply as in Ansible: ``all``'s, then each group's from parent to child (siblings by name), then
the host's own. Host ranges (``pi[1:4]``, ``node[a:c]``, ``web[01:10:2]``) expand as in Ansible.

A selection (:func:`select`) is a comma-separated list of ``@group`` (``@all``: every device), ``@label=value``,
inventory names, and ``--device`` specs (``local``, ``[user@]host[:port]``, an ssh_config alias).
"""

from __future__ import annotations

import ast
import os
import shlex
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from edgepack.devices import DeviceSpec, host_ok, parse_device, user_ok
from edgepack.errors import UsageError
from edgepack.ui import note, safe

DEFAULT_FILE = "edgepack.toml"
ENV = "EDGEPACK_INVENTORY"
TOML_KEYS = ("host", "user", "port", "identity", "python", "remote_dir", "groups", "labels")
SSH_CONNECTIONS = ("ssh", "paramiko", "smart")

_HINT = "fix the entry (see README: SSH devices > Fleets)"


@dataclass
class Inventory:
    path: Optional[Path]
    devices: dict[str, DeviceSpec] = field(default_factory=dict)  # by name, in file order
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> device names (children's included)
    refused: dict[str, str] = field(default_factory=dict)  # name -> why it cannot be used (ansible_connection)

    def group(self, name: str) -> list[DeviceSpec]:
        if name == "all":
            return list(self.devices.values())
        if name not in self.groups:
            known = ", ".join("@" + g for g in sorted(self.groups)) or "none"
            raise UsageError(
                f"no group {name!r} in {self.where()} (groups: {known})", "pick one of those, or @all for every device"
            )
        return [self.devices[n] for n in self.groups[name]]

    def labelled(self, key: str, value: str) -> list[DeviceSpec]:
        found = [d for d in self.devices.values() if d.labels.get(key) == value]
        if not found:
            raise UsageError(
                f"no device in {self.where()} has label {key}={value}", "check the labels: edgepack devices @all"
            )
        return found

    def where(self) -> str:
        return str(self.path) if self.path else "the inventory (none found)"


# --------------------------------------------------------------------------- finding and reading


def find(path: Optional[Path] = None) -> Optional[Path]:
    """The inventory file: ``path``, else ``$EDGEPACK_INVENTORY``, else ``./edgepack.toml`` if it exists."""
    if path is None and os.environ.get(ENV):
        path = Path(os.environ[ENV])
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UsageError(
                f"inventory {path} does not exist",
                "pass --inventory with an edgepack.toml or an Ansible inventory (INI or YAML)",
            )
        return path
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load(path: Optional[Path]) -> Inventory:
    if path is None:
        return Inventory(None)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read inventory {path} ({e})", "check the file")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return _from_toml(path, text)
    if suffix in (".yml", ".yaml", ".json"):
        return _from_ansible(path, _yaml_groups(path, text))
    return _from_ansible(path, _ini_groups(path, text))


def _from_toml(path: Path, text: str) -> Inventory:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as a package (a dependency there)
        import tomli as tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML ({e})", "fix the file")
    table = data.get("devices", {})
    inv = Inventory(path)
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [devices] must be a table of devices", "write [devices.NAME] tables")
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise UsageError(f"{path}: devices.{name} must be a table", "write [devices.NAME] with host = ... etc.")
        unknown = sorted(set(entry) - set(TOML_KEYS))
        if unknown:
            raise UsageError(f"{path}: devices.{name}: unknown key {unknown[0]!r}", f"use {', '.join(TOML_KEYS)}")
        groups = entry.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise UsageError(f"{path}: devices.{name}.groups must be a list of names", 'e.g. groups = ["pis"]')
        spec = _device(
            path,
            name,
            host=entry.get("host"),
            user=entry.get("user"),
            port=entry.get("port"),
            identity=entry.get("identity"),
            python=entry.get("python"),
            remote_dir=entry.get("remote_dir"),
            labels=entry.get("labels", {}),
            groups=tuple(groups),
        )
        inv.devices[name] = spec
        for g in groups:
            _group_name(path, g)
            inv.groups.setdefault(g, []).append(name)
    return inv


# Ansible: one group = (hosts: {name: vars}, vars, children: [names]); both readers produce this shape.
_Group = tuple[dict[str, dict[str, Any]], dict[str, Any], list[str]]


def _yaml_groups(path: Path, text: str) -> dict[str, _Group]:
    try:
        import yaml
    except ImportError:  # a dependency of edgepack; only missing from a hand-made environment
        raise UsageError(f"reading {path} needs PyYAML", "pip install pyyaml, or use an INI or TOML inventory")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"{path} is not valid YAML ({str(e).splitlines()[0]})", "fix the file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: an Ansible YAML inventory is a mapping of groups (all: ...)", "fix the file")
    groups: dict[str, _Group] = {}

    def walk(name: str, body: Any) -> None:
        _group_name(path, name)
        hosts, vars_, children = groups.setdefault(name, ({}, {}, []))
        if body is None:
            return
        if not isinstance(body, dict):
            raise UsageError(f"{path}: group {name!r} must be a mapping (hosts:, vars:, children:)", "fix the file")
        unknown = sorted(set(body) - {"hosts", "vars", "children"})
        if unknown:
            raise UsageError(
                f"{path}: group {name!r} has {unknown[0]!r}: a group holds hosts:, vars: and children:",
                "put host variables under hosts: NAME:, group variables under vars:",
            )
        for pattern, hv in _mapping(path, body.get("hosts"), f"{name}.hosts").items():
            for host in expand(str(pattern)):
                hosts.setdefault(host, {}).update(_mapping(path, hv, f"host {host}"))
        vars_.update(_mapping(path, body.get("vars"), f"{name}.vars"))
        for child, cbody in _mapping(path, body.get("children"), f"{name}.children").items():
            if str(child) not in children:
                children.append(str(child))
            walk(str(child), cbody)

    for name, body in data.items():
        walk(str(name), body)
    return groups


def _mapping(path: Path, value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{path}: {what} must be a mapping", "fix the file")
    return value


def _ini_groups(path: Path, text: str) -> dict[str, _Group]:
    """Ansible's INI inventory grammar (its ini plugin): sections ``[g]``, ``[g:vars]``, ``[g:children]``;
    host lines tokenized like a shell line (``#`` starts a comment), ``key=value`` values read as Python literals."""
    groups: dict[str, _Group] = {"ungrouped": ({}, {}, [])}
    group, kind = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        where = f"{path}:{n}"
        if line.startswith("[") and line.endswith("]"):
            group, _, kind = line[1:-1].strip().partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise UsageError(
                    f"{where}: section [{line[1:-1]}]: a section is [group], [group:vars] or [group:children]",
                    "fix the section name",
                )
            _group_name(path, group)
            groups.setdefault(group, ({}, {}, []))
            continue
        hosts, vars_, children = groups[group]
        if kind == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise UsageError(f"{where}: expected key=value in [{group}:vars], got {raw.strip()!r}", _HINT)
            vars_[key.strip()] = _literal(value.strip())
        elif kind == "children":
            _group_name(path, line)
            if line not in children:
                children.append(line)
            groups.setdefault(line, ({}, {}, []))
        else:
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as e:
                raise UsageError(f"{where}: cannot read the host line ({e})", "check its quotes")
            if not tokens:
                continue
            pattern, hv = tokens[0], {}
            for t in tokens[1:]:
                key, eq, value = t.partition("=")
                if not eq:
                    raise UsageError(f"{where}: expected key=value after the host name, got {t!r}", _HINT)
                hv[key] = _literal(value)
            port = None
            head, colon, tail = pattern.rpartition(":")  # host:port, Ansible's shorthand (not a range's ':')
            if colon and tail.isdigit() and head.count("[") == head.count("]") and ":" not in head:
                pattern, port = head, tail
            for host in expand(pattern):
                entry = hosts.setdefault(host, {})
                if port is not None:
                    entry["ansible_port"] = _literal(port)
                entry.update(hv)
    return groups


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def expand(pattern: str) -> list[str]:
    """Ansible host ranges: ``pi[1:3]`` -> pi1 pi2 pi3; ``web[01:10:3]`` keeps the width; ``n[a:c]`` letters."""
    head, lb, rest = pattern.partition("[")
    if not lb or "]" not in rest:
        return [pattern]
    inner, _, tail = rest.partition("]")
    parts = inner.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        return [pattern]  # not a range: an IPv6 literal or a plain name with brackets; host checks judge it
    start, end = parts[0], parts[1]
    step = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else 1
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == len(end) == 1 and start in string.ascii_letters and end in string.ascii_letters:
        letters = string.ascii_letters
        items = list(letters[letters.index(start) : letters.index(end) + 1 : step])
    else:
        raise UsageError(f"bad host range {pattern!r}", "use NAME[1:4], NAME[01:10:2] or NAME[a:d]")
    return [f"{head}{i}{t}" for i in items for t in expand(tail)]


def _group_name(path: Path, name: str) -> None:
    if not host_ok(name) or name.startswith("["):
        raise UsageError(f"{path}: bad group name {name!r}: letters, digits, '.', '-' and '_' only", "rename the group")


def _from_ansible(path: Path, groups: dict[str, _Group]) -> Inventory:
    inv = Inventory(path)
    # every group's members, its children's included; and each group's depth below 'all' (for vars precedence)
    members: dict[str, list[str]] = {}
    depth: dict[str, int] = {}

    def collect(g: str, seen: tuple[str, ...]) -> list[str]:
        if g in seen:
            raise UsageError(f"{path}: group {g!r} is its own child ({' -> '.join((*seen, g))})", "fix children:")
        if g not in members:
            out = list(groups.get(g, ({}, {}, []))[0])
            for c in groups.get(g, ({}, {}, []))[2]:
                out += [h for h in collect(c, (*seen, g)) if h not in out]
            members[g] = out
        return members[g]

    def deepen(g: str, d: int, seen: tuple[str, ...]) -> None:
        if g in seen:
            return
        depth[g] = max(depth.get(g, 0), d)
        for c in groups.get(g, ({}, {}, []))[2]:
            deepen(c, d + 1, (*seen, g))

    for g in groups:
        collect(g, ())
        deepen(g, 0 if g == "all" else 1, ())
    order: list[str] = []
    for g in groups:
        for h in groups[g][0]:
            if h not in order:
                order.append(h)
    for host in order:
        in_groups = sorted((g for g in groups if host in members[g]), key=lambda g: (depth[g], g))
        hv: dict[str, Any] = dict(groups["all"][1]) if "all" in groups else {}
        for g in in_groups:
            if g != "all":
                hv.update(groups[g][1])
        for g in groups:  # the host's own variables, from every place it is listed
            hv.update(groups[g][0].get(host, {}))
        names = tuple(g for g in in_groups if g not in ("all", "ungrouped"))
        connection = str(_var(hv, "ansible_connection") or "ssh")
        if connection not in SSH_CONNECTIONS + ("local",):
            inv.refused[host] = f"ansible_connection={connection} (edgepack reaches devices over SSH or locally)"
        python = _var(hv, "ansible_python_interpreter")
        labels = hv.get("edgepack_labels") or {}
        try:
            inv.devices[host] = _device(
                path,
                host,
                host="local" if connection == "local" else _var(hv, "ansible_host"),
                user=_var(hv, "ansible_user"),
                port=_var(hv, "ansible_port"),
                identity=_var(hv, "ansible_ssh_private_key_file", "ansible_private_key_file"),
                python=None if python is None or str(python).startswith("auto") else python,
                remote_dir=hv.get("edgepack_remote_dir"),
                labels=labels,
                groups=names,
            )
        except UsageError:
            if host not in inv.refused:
                raise
            inv.devices[host] = DeviceSpec(text=host, local=False, groups=names)  # refused when selected
        for g in names:
            inv.groups.setdefault(g, []).append(host)
    return inv


def _var(hv: dict[str, Any], name: str, *aliases: str) -> Any:
    """An Ansible connection variable under its name or its older ``ansible_ssh_*`` spelling."""
    for n in (name, name.replace("ansible_", "ansible_ssh_", 1), *aliases):
        if hv.get(n) is not None:
            return hv[n]
    return None


def _device(
    path: Path,
    name: str,
    *,
    host: Any,
    user: Any,
    port: Any,
    identity: Any,
    python: Any,
    remote_dir: Any,
    labels: Any,
    groups: tuple[str, ...],
) -> DeviceSpec:
    """One inventory entry, checked as strictly as a --device: names and hosts that need no quoting anywhere."""

    def bad(what: str, fix: str = _HINT) -> UsageError:
        return UsageError(f"{path}: device {name!r}: {what}", fix)

    if not host_ok(name) or name.startswith("["):
        raise bad("the name may hold only letters, digits, '.', '-' and '_'", "rename it")
    if name == "local" and host is None:
        host = "local"
    if host is not None and not isinstance(host, str):
        raise bad(f"host {host!r} is not a string")
    if host == "local":
        return DeviceSpec(
            text=name,
            local=True,
            python=str(python) if python else None,
            groups=groups,
            labels=_labels(labels, bad),
        )
    target = host or name
    if not host_ok(target.strip("[]") if target.startswith("[") else target):
        raise bad(f"bad host {target!r}: letters, digits, '.', '-' and '_', or an IPv6 address")
    if user is not None and not (isinstance(user, str) and user_ok(user)):
        raise bad(f"bad user {user!r}: letters, digits, '.', '-', '_' and '+'")
    if port is not None:
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise bad(f"port {port!r} is not a number")
        if not 0 < port < 65536:
            raise bad(f"port {port} is out of range", "ports are 1-65535")
    key: Optional[Path] = None
    if identity:
        key = Path(os.path.expanduser(str(identity)))
        if not key.is_absolute():
            key = path.parent / key
    for what, value in (("python", python), ("remote_dir", remote_dir)):
        if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
            raise bad(f"{what} {value!r} must be a path")
    return DeviceSpec(
        text=name,
        local=False,
        user=user,
        host=target.strip("[]"),
        port=port,
        identity=key,
        python=python,
        remote_dir=remote_dir,
        groups=groups,
        labels=_labels(labels, bad),
    )


def _labels(labels: Any, bad: Any) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise bad(f"labels must be a mapping of names to values, got {labels!r}", 'e.g. labels = { soc = "rk3588" }')
    return {str(k): str(v) for k, v in labels.items()}


# --------------------------------------------------------------------------- selecting


def _needs_inventory(item: str) -> bool:
    return item.startswith("@") or ("@" not in item and ":" not in item and item != "local")


def select(text: str, inventory: Optional[Path] = None) -> list[DeviceSpec]:
    """The devices ``--device`` names: comma-separated ``@group``, ``@label=value``, inventory names and
    ``--device`` specs; each device once, in the order given (a group's devices in file order)."""
    items = [t.strip() for t in (text or "local").split(",")]
    if not all(items):
        raise UsageError(f"bad --device {text!r}: an empty name between commas", "use --device a,b,@group")
    inv: Optional[Inventory] = None
    if inventory is not None or any(_needs_inventory(i) for i in items):
        inv = load(find(inventory))
    out: dict[str, DeviceSpec] = {}
    for item in items:
        for spec in _one(item, inv):
            out.setdefault(spec.name, spec)
    return list(out.values())


def _one(item: str, inv: Optional[Inventory]) -> Iterable[DeviceSpec]:
    if item.startswith("@"):
        assert inv is not None
        if inv.path is None:
            raise UsageError(
                f"--device {item} names a group, but there is no inventory ({DEFAULT_FILE} here, or --inventory)",
                f"write {DEFAULT_FILE} with a [devices] table, or pass --inventory hosts.ini|hosts.yml",
            )
        key, eq, value = item[1:].partition("=")
        found = inv.labelled(key, value) if eq else inv.group(key)
        for spec in found:
            if spec.name in inv.refused:  # a group may hold hosts edgepack cannot reach (winrm, docker, ...)
                note(safe(f"edgepack: note: skipping {spec.name} of {item}: {inv.refused[spec.name]}"))
        usable = [s for s in found if s.name not in inv.refused]
        if not usable:
            raise UsageError(f"--device {item}: no device there can be used", "pick another group")
        return usable
    if inv is not None and item in inv.devices:
        _usable(inv, item)
        return [inv.devices[item]]
    return [parse_device(item)]


def _usable(inv: Inventory, name: str) -> None:
    if name in inv.refused:
        raise UsageError(f"device {name!r} in {inv.path} cannot be used: {inv.refused[name]}", "deselect it")
