"""Which files an ONNX graph pulls in as external data, read without the `onnx` package.

An ONNX file may say "this initializer's bytes live in file X" (TensorProto.external_data,
key "location"). onnxruntime opens X relative to the graph, so a hostile graph could point it
anywhere. The robot has no `onnx` package, so this walks the protobuf wire format directly
(varints and length-delimited fields only), visiting the messages that can hold tensors and
skipping everything else by length: weights are never decoded or copied, and the file is read
through a memory map.

Field numbers (onnx/onnx.proto, stable since IR version 3):
ModelProto.graph=7, .functions=25; GraphProto.node=1, .initializer=5, .sparse_initializer=15;
NodeProto.attribute=5; AttributeProto.t=5, .g=6, .tensors=10, .graphs=11,
.sparse_tensor=22, .sparse_tensors=23; SparseTensorProto.values=1, .indices=2;
TensorProto.external_data=13; StringStringEntryProto.key=1, .value=2; FunctionProto.node=7.
"""

from __future__ import annotations

import mmap
from pathlib import Path

MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies); deeper is refused rather than recursed
# Graphs whose weights exceed this many bytes are written with external data: one protobuf
# cannot exceed 2 GiB, and graph structure plus weights must stay under it with margin.
EXTERNAL_DATA_BYTES = 3 << 29  # 1.5 GiB


class OnnxRefError(ValueError):
    """The graph file is not a well-formed ONNX protobuf."""


# message kind -> {field number: child message kind}
_CHILDREN = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise OnnxRefError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """Yield (field number, wire type, value or (start, end)) for one message's bytes."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise OnnxRefError("length-delimited field runs past its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise OnnxRefError(f"unsupported wire type {wire}")
    if pos != end:
        raise OnnxRefError("message ends inside a field")


def _walk(buf, kind: str, start: int, end: int, depth: int, out: list[str]) -> None:
    if depth > MAX_DEPTH:
        raise OnnxRefError(f"graphs nested deeper than {MAX_DEPTH}")
    if kind == "entry":
        key = value = None
        for number, wire, span in _fields(buf, start, end):
            if wire == 2 and number in (1, 2):
                text = bytes(buf[span[0] : span[1]]).decode("utf-8", errors="replace")
                key, value = (text, value) if number == 1 else (key, text)
        if key == "location" and value is not None:
            out.append(value)
        return
    children = _CHILDREN[kind]
    for number, wire, span in _fields(buf, start, end):
        child = children.get(number)
        if child is not None and wire == 2:
            _walk(buf, child, span[0], span[1], depth + 1, out)


def external_locations(path: str | Path) -> list[str]:
    """Every external-data `location` string in the ONNX file, in file order (may repeat)."""
    out: list[str] = []
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            raise OnnxRefError("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                _walk(view, "model", 0, size, 0, out)
            finally:
                view.release()
    return out
