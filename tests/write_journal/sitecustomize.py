"""Journal every write a distributed training process makes under `$JOURNAL_ROOT`, one file per rank.

`tests/test_distributed.py` puts this directory on the PYTHONPATH of the processes that torchrun or
`accelerate launch` starts, so Python imports it at start-up. A Python audit hook sees every file
open with write flags (builtin `open`, `os.open`, so pathlib, json, matplotlib, torch's Python side),
every mkdir, rename and removal. Two writers are native code that audit hooks cannot see: the
safetensors serializer (weights) and the tokenizers library (`tokenizer.json`); their Python entry
points are wrapped here to raise an audit event of their own before they write. Whatever else
might write natively is caught by the test instead: it requires every file found in the output
directory to be in rank 0's journal.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {
    # event: positions of its path arguments
    "os.mkdir": (0,),
    "os.rename": (0, 1),  # os.rename and os.replace
    "os.remove": (0,),  # os.remove and os.unlink
    "os.rmdir": (0,),
    "os.truncate": (0,),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "shutil.rmtree": (0,),
    "shutil.copyfile": (1,),
    "shutil.move": (0, 1),
    "native.write": (0,),
}


def _start(rank: str, root: str, journals: str) -> None:
    # Opened before the hook is installed, and outside the root: the journal never journals itself.
    journal = open(os.path.join(journals, f"rank-{rank}.jsonl"), "a", buffering=1)  # noqa: SIM115
    world = os.environ.get("WORLD_SIZE")
    journal.write(json.dumps({"event": "start", "rank": rank, "world_size": world}) + "\n")

    def record(event: str, path: Any) -> None:
        if not isinstance(path, str | bytes | os.PathLike):
            return  # a file descriptor
        full = os.path.realpath(os.fsdecode(path))
        if full == root or full.startswith(root + os.sep):
            journal.write(json.dumps({"event": event, "path": os.path.relpath(full, root)}) + "\n")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            if args[2] & WRITE_FLAGS:
                record(event, args[0])
        elif event in PATH_EVENTS:
            for index in PATH_EVENTS[event]:
                record(event, args[index])

    sys.addaudithook(hook)
    _audit_native_writers()


def _audit_native_writers() -> None:
    """Raise `native.write` before the Rust writers run; patched before safetensors.torch binds them."""
    import safetensors
    import tokenizers

    serialize_file = safetensors.serialize_file
    save = tokenizers.Tokenizer.save

    def audited_serialize_file(tensors: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
        sys.audit("native.write", filename)
        return serialize_file(tensors, filename, *args, **kwargs)

    def audited_save(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        sys.audit("native.write", path)
        return save(self, path, *args, **kwargs)

    safetensors.serialize_file = audited_serialize_file
    tokenizers.Tokenizer.save = audited_save


if "RANK" in os.environ and "JOURNAL_ROOT" in os.environ:  # the workers, not the launcher
    _start(os.environ["RANK"], os.path.realpath(os.environ["JOURNAL_ROOT"]), os.environ["JOURNAL_DIR"])
