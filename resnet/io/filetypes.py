"""What a model file is, from its first bytes: a PyTorch checkpoint, an ONNX model, or something else.

The weights loader (:mod:`resnet.weights.reading`) and the ONNX runtimes (:mod:`resnet.deploy.runtimes`) look here
before handing a file to ``torch.load`` or ``onnx.load``, so that a file given to the wrong one (an ONNX model as
``--weights``, a checkpoint as ``--onnx``), a path that is not a regular file (a folder, a named pipe,
``/dev/null``) and a truncated zip archive are each named for what they are, without reading the whole file.
"""

from __future__ import annotations

import os
import stat
from typing import Optional, Union

__all__ = [
    "LEGACY_TORCH_MAGIC",
    "ZIP_MAGIC",
    "looks_like_onnx",
    "looks_like_torch_checkpoint",
    "not_a_regular_file",
    "read_head",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The first bytes of a zip archive (a local file header): ``torch.save``'s format since torch 1.6.
ZIP_MAGIC = b"PK\x03\x04"
#: The first bytes of ``torch.save(..., _use_new_zipfile_serialization=False)``: the pickled magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."

# Top-level fields of onnx.ModelProto: field number -> protobuf wire type (0 varint, 2 length-delimited).
_MODEL_PROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_HEAD_BYTES = 4096


def not_a_regular_file(path: PathLike) -> Optional[str]:
    """What ``path`` is when it exists but is not a regular file (``"a directory"``, ``"a named pipe (FIFO)"``,
    ``"a character device"`` ...), following symbolic links; ``None`` for a regular file or a missing path."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_head(path: PathLike, size: int = _HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the regular file ``path`` (fewer for a shorter file)."""
    with open(path, "rb") as file:
        return file.read(size)


def _varint(data: bytes, at: int) -> tuple[Optional[int], int]:
    """A protobuf varint at ``data[at:]``: (value, next offset), or (None, at) where it does not end in 10 bytes."""
    value = 0
    for shift, offset in enumerate(range(at, min(at + 10, len(data)))):
        byte = data[offset]
        value |= (byte & 0x7F) << (7 * shift)
        if byte < 0x80:
            return value, offset + 1
    return None, at


def looks_like_onnx(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts as a serialised ``onnx.ModelProto``.

    Walks the top-level protobuf fields that ``head`` holds: every tag must be a ModelProto field with its
    wire type (``ir_version``, ``producer_name``, ``graph`` ...), and at least one must be there. A zip or
    pickle header, text or random bytes fail on the first byte or two.
    """
    at, fields = 0, 0
    while at < len(head):
        key, after = _varint(head, at)
        if key is None:
            return fields > 0 and len(head) - at < 10  # a tag cut by the end of ``head``
        number, wire = key >> 3, key & 7
        if _MODEL_PROTO_FIELDS.get(number) != wire:
            return False
        fields += 1
        value, at = _varint(head, after)
        if value is None:
            return len(head) - after < 10
        if wire == 2:
            at += value  # the field's bytes; the walk ends when they run past ``head``
    return fields > 0


def looks_like_torch_checkpoint(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts as a file of ``torch.save``: a zip archive, or the
    pickled magic number of the older format."""
    return head.startswith(ZIP_MAGIC) or head.startswith(LEGACY_TORCH_MAGIC)
