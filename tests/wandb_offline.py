"""Reads what an offline W&B run folder holds (``offline-run-*/run-*.wandb``): tests check the logged
history, summary, exit code and tags, and which process wrote the run.

The ``.wandb`` file is W&B's record log (the LevelDB log layout: 32 KiB blocks of records with a
7-byte header, records split across blocks as first/middle/last parts), each record a
``wandb_internal_pb2.Record`` protobuf; wandb 0.31 ships no reader for it."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B record log"
    i, buf = 7, b""
    while i + _HEADER <= len(data):
        left = _BLOCK - i % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            i += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[i:i + _HEADER])
        if length == 0 and kind == 0:
            break
        chunk, i = data[i + _HEADER:i + _HEADER + length], i + _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            buf = chunk
        elif kind == _MIDDLE:
            buf += chunk
        elif kind == _LAST:
            yield buf + chunk
            buf = b""


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(folder: Path) -> dict[str, Any]:
    """{"id", "tags", "history" (one dict per logged step), "summary", "exit_code", "pid"}."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"history": [], "summary": {}, "exit_code": None, "tags": [], "id": None}
    (log_file,) = folder.glob("run-*.wandb")
    for raw in _records(log_file):
        r = pb.Record()
        r.ParseFromString(raw)
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["tags"] = r.run.run_id, list(r.run.tags)
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    m = re.search(r"Thread[^:\s]*:(\d+) \[", (folder / "logs" / "debug.log").read_text())
    out["pid"] = int(m.group(1)) if m else None
    return out
