"""Task kinds, server types, service times and server counts: data, not code.

The defaults (`stomp_fli.json` beside this module) are the seeds' STOMP setup: DSP 2 for a
multiply/add/sub, 14 for a sinh/cosh, 8 for a divide; constant memory 5; shared (state)
memory 3; data memory 3; 128 DSPs, 128 shared and 128 constant memory ports, 256 data
memory ports. A user's JSON of the same form replaces them (`load`), and
``--servers dsp=256`` changes the counts (`parse_servers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from flimcc.errors import UnsupportedError

DEFAULT = Path(__file__).with_name("stomp_fli.json")


@dataclass(frozen=True)
class ServiceTable:
    """kind -> (server type, time) and server type -> count."""

    tasks: dict[str, tuple[str, int]]
    servers: dict[str, int]

    def server(self, kind: str) -> str:
        return self.tasks[kind][0]

    def time(self, kind: str) -> int:
        return self.tasks[kind][1]

    def with_servers(self, counts: dict[str, int]) -> ServiceTable:
        unknown = sorted(set(counts) - set(self.servers))
        if unknown:
            raise UnsupportedError(f"--servers: unknown server type '{unknown[0]}' (types: {', '.join(self.servers)})")
        return replace(self, servers={**self.servers, **counts})


def load(path: str | Path | None = None) -> ServiceTable:
    """The service table in `path` (default: the seeds' STOMP setup); a malformed one is
    refused naming the file and the entry."""
    path = Path(path) if path is not None else DEFAULT
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UnsupportedError(f"{path}: not a readable JSON service table ({e})") from None
    servers = data.get("servers") if isinstance(data, dict) else None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(servers, dict) or not isinstance(tasks, dict) or not servers or not tasks:
        raise UnsupportedError(f"{path}: a service table needs 'servers' {{type: count}} and 'tasks' "
                               f"{{kind: {{server, time}}}}")
    for name, count in servers.items():
        if not isinstance(count, int) or count < 1:
            raise UnsupportedError(f"{path}: servers.{name} is {count!r}, not a whole number >= 1")
    table = {}
    for kind, entry in tasks.items():
        server = entry.get("server") if isinstance(entry, dict) else None
        time = entry.get("time") if isinstance(entry, dict) else None
        if server not in servers:
            raise UnsupportedError(f"{path}: tasks.{kind}.server is {server!r}, not one of {', '.join(servers)}")
        if not isinstance(time, int) or time < 1:
            raise UnsupportedError(f"{path}: tasks.{kind}.time is {time!r}, not a whole number >= 1")
        table[kind] = (server, time)
    return ServiceTable(tasks=table, servers=dict(servers))


def parse_servers(text: str) -> dict[str, int]:
    """``dsp=256,const=64`` -> {"dsp": 256, "const": 64}; refuses anything else naming it."""
    counts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, num = part.partition("=")
        if not eq or not num.strip().isdigit() or int(num) < 1:
            raise UnsupportedError(f"--servers: '{part}' is not TYPE=COUNT with a whole COUNT >= 1")
        counts[name.strip()] = int(num)
    return counts
