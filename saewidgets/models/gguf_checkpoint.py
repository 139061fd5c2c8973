"""Converting a GGUF model to a float32 safetensors checkpoint a block of rows at a time, in little memory.

transformers loads a GGUF model (``from_pretrained(..., gguf_file=...)``) by de-quantising every tensor into one state
dict and copying it into the model, and ``save_pretrained`` then serialises a bytes copy of each tensor: converting
the embedded Gemma 3 270M that way peaked at 3.3 GB of resident memory, the largest figure of the whole first demo
run, where Binder gives about 2 GB. Here the same steps, with transformers' own parts (its GGUF name map and its
per-architecture tensor processor, e.g. Gemma's ``norm - 1``), run `ROWS_PER_BLOCK` rows at a time: each block goes
to a scratch file as it is made, and the checkpoint is then written in safetensors' layout, tensors sorted by name
behind a JSON header padded to 8 bytes, as ``save_pretrained`` writes it (the same bytes: the Gemma test compares
a digest). The largest thing in memory is one block (64 MB of float32 for the 262k-row embedding).

The tensors are found with `read_tensors`, not gguf's ``GGUFReader``: that one turns every metadata value into
numpy arrays, 1.5 million of them for Gemma's vocabulary and merges, ~700 MB held for as long as the reader lives.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

_GGUF_MAGIC = b"GGUF"
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF metadata value types
_STRING, _ARRAY, _UINT64 = 8, 9, 10

#: Rows de-quantised per step: 25,600 x 640 float32 is 64 MB; every other Gemma tensor fits in one block.
ROWS_PER_BLOCK = 25_600


@dataclass(frozen=True)
class GGUFTensor:
    """A tensor of a GGUF file: ``data`` is a read-only view of the file, ``[rows, bytes per row]`` uint8 for a
    quantised type (as gguf's ``dequantize`` takes it) or the values themselves for a float type."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    data: np.ndarray


@dataclass(frozen=True)
class GGUFFile:
    """What the conversion reads from a GGUF file: its ``general.architecture`` and its tensors, in file order."""

    architecture: str
    tensors: list[GGUFTensor]


@dataclass(frozen=True)
class _Layout:
    """Where the parts of a GGUF file lie: each metadata entry's key, value type and byte span, the tensor index's
    span, the tensors' data start, and what `read_tensors` reads from the metadata."""

    entries: list[tuple[str, int, int, int]]  # key, value type, start, stop
    index: tuple[int, int]  # the tensor infos' byte span
    infos: list[tuple[str, int, tuple[int, ...], int]]  # name, GGML type, dims (fastest first), data offset
    data_start: int
    alignment: int
    architecture: str


def _layout(view: memoryview, path: str | Path) -> _Layout:
    """Parse the header, metadata and tensor index of the GGUF file in ``view``, skipping values (not parsing
    them) except the architecture and the alignment."""
    if bytes(view[:4]) != _GGUF_MAGIC or struct.unpack_from("<I", view, 4)[0] < 2:
        raise ValueError(f"{path} is not a GGUF file of version 2 or later")
    n_tensors, n_values = struct.unpack_from("<QQ", view, 8)
    at, alignment, architecture = 24, 32, ""

    def string(at: int) -> tuple[int, bytes]:
        (length,) = struct.unpack_from("<Q", view, at)
        return at + 8 + length, bytes(view[at + 8 : at + 8 + length])

    def skip(at: int, kind: int) -> int:
        if kind == _STRING:
            return at + 8 + struct.unpack_from("<Q", view, at)[0]
        if kind == _ARRAY:
            item, count = struct.unpack_from("<IQ", view, at)
            at += 12
            if item in _SCALAR_SIZES:
                return at + count * _SCALAR_SIZES[item]
            for _ in range(count):
                at = skip(at, item)
            return at
        return at + _SCALAR_SIZES[kind]

    entries = []
    for _ in range(n_values):
        start = at
        at, key = string(at)
        (kind,) = struct.unpack_from("<I", view, at)
        if key == b"general.alignment":
            (alignment,) = struct.unpack_from("<I", view, at + 4)
        elif key == b"general.architecture" and kind == _STRING:
            architecture = string(at + 4)[1].decode()
        at = skip(at + 4, kind)
        entries.append((key.decode(), kind, start, at))
    index_start, infos = at, []
    for _ in range(n_tensors):
        at, raw_name = string(at)
        (n_dims,) = struct.unpack_from("<I", view, at)
        dims = struct.unpack_from(f"<{n_dims}Q", view, at + 4)
        kind, offset = struct.unpack_from("<IQ", view, at + 4 + 8 * n_dims)
        at += 4 + 8 * n_dims + 12
        infos.append((raw_name.decode(), kind, dims, offset))
    return _Layout(entries, (index_start, at), infos, at + (-at % alignment), alignment, architecture)


def read_tensors(path: str | Path) -> GGUFFile:
    """The architecture and tensors of the GGUF file at ``path``; the rest of the metadata is skipped, not parsed."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    file = np.memmap(path, mode="r")
    layout = _layout(file.data, path)
    floats: dict[Any, Any] = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
    tensors = []
    for name, raw_kind, dims, offset in layout.infos:
        kind = GGMLQuantizationType(raw_kind)
        shape = tuple(reversed(dims))  # GGUF lists the fastest-moving dimension first
        dtype: Any
        if kind in floats:
            count, dtype = int(np.prod(shape)), floats[kind]
        else:
            block, size = GGML_QUANT_SIZES[kind]
            shape = (*shape[:-1], shape[-1] // block * size)
            count, dtype = int(np.prod(shape)), np.uint8
        data = np.frombuffer(file, dtype=dtype, count=count, offset=layout.data_start + offset).reshape(shape)
        tensors.append(GGUFTensor(name, kind, data))
    return GGUFFile(layout.architecture, tensors)


#: The prefix of the metadata whose lists `metadata_copy` leaves out: the tokenizer's (for Gemma 3, 262k tokens,
#: scores and types, and its merges). A model config takes only their length (the vocabulary size) and the
#: tokenizer's scalars (special token ids), which the copy keeps.
TOKENIZER_METADATA = "tokenizer."


def metadata_copy(path: str | Path, target: Path) -> Path:
    """Write at ``target`` the GGUF file at ``path`` without the tokenizer's lists (`TOKENIZER_METADATA`; the
    token list's length kept as ``{architecture}.vocab_size`` where the file does not state it), and with its
    tensor data a hole (a sparse file: no bytes written, the size kept so that the index still points
    inside it), for transformers' ``load_gguf_checkpoint(..., return_tensors=False)`` to build the config from.

    That function parses every metadata value with gguf's reader, ~20 s for Gemma's vocabulary on this CPU, the
    largest single cost of the embedded model's conversion; on the copy it reads the same config entries, with its
    own rules for them, in well under a second. Returns ``target``."""
    view = np.memmap(path, mode="r").data
    layout = _layout(view, path)
    kept: list[bytes | memoryview] = [
        view[start:stop]
        for key, kind, start, stop in layout.entries
        if not (kind == _ARRAY and key.startswith(TOKENIZER_METADATA))
    ]
    keys = {key: (kind, start, stop) for key, kind, start, stop in layout.entries}
    vocab_key, tokens = f"{layout.architecture}.vocab_size", keys.get(TOKENIZER_METADATA + "ggml.tokens")
    if vocab_key not in keys and tokens is not None and tokens[0] == _ARRAY:
        # transformers reads the vocabulary size from the token list's length when the metadata does not state it
        name = vocab_key.encode()
        (count,) = struct.unpack_from("<Q", view, tokens[1] + 8 + len(TOKENIZER_METADATA + "ggml.tokens") + 8)
        kept.append(struct.pack("<Q", len(name)) + name + struct.pack("<IQ", _UINT64, count))
    head = bytearray(view[:24])
    struct.pack_into("<Q", head, 16, len(kept))
    for entry in kept:
        head += entry
    head += view[layout.index[0] : layout.index[1]]
    head += bytes(-len(head) % layout.alignment)
    with open(target, "wb") as out:
        out.write(head)
        out.truncate(len(head) + os.path.getsize(path) - layout.data_start)
    return target


def convert_gguf(gguf_path: str | Path, folder: Path, progress: bool = True) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``generation_config.json`` for the GGUF model at
    ``gguf_path`` into ``folder``: float32, with the names and values ``from_pretrained(gguf_file=...)`` gives."""
    import transformers
    from gguf import dequantize
    from tqdm.auto import tqdm
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
    )

    gguf_path = Path(gguf_path)
    # transformers' own rules build the config, from a copy without the tokenizer's metadata that its reader would
    # spend ~20 s parsing (`metadata_copy`), as `AutoConfig.from_pretrained(gguf_file=...)` builds it from the whole
    # file; the copy is a sparse file beside the checkpoint, removed once read.
    stripped = metadata_copy(gguf_path, folder / ".metadata.gguf")
    try:
        parsed = load_gguf_checkpoint(str(stripped), return_tensors=False)
    finally:
        stripped.unlink()
    config = transformers.AutoConfig.for_model(**parsed["config"])
    with torch.device("meta"):
        skeleton = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gguf_file = read_tensors(gguf_path)
    processor = TENSOR_PROCESSORS.get(gguf_file.architecture, TensorProcessor)(config=parsed.get("config", {}))
    names = get_gguf_hf_weights_map(skeleton, processor)
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}

    scratch = folder / ".tensors.scratch"
    entries: dict[str, tuple[int, int, tuple[int, ...]]] = {}  # name -> (start, stop) in scratch, shape
    try:
        with open(scratch, "wb") as out:
            for tensor in tqdm(gguf_file.tensors, desc="converting GGUF tensors", disable=not progress):
                shape, start = None, out.tell()
                for first in range(0, max(len(tensor.data), 1), ROWS_PER_BLOCK):
                    block = dequantize(tensor.data[first : first + ROWS_PER_BLOCK], tensor.tensor_type)
                    result = processor.process(
                        weights=block, name=tensor.name, tensor_key_mapping=names, parsed_parameters=parsed
                    )
                    if result.name not in names:
                        break
                    rows = np.ascontiguousarray(result.weights, dtype=np.float32)
                    shape = rows.shape if shape is None else (shape[0] + rows.shape[0], *shape[1:])
                    out.write(rows.tobytes())
                if shape is None:
                    continue  # a GGUF tensor the model has no parameter for (transformers skips it too)
                name = names[result.name]
                if expected.get(name) != shape:
                    raise ValueError(
                        f"GGUF tensor {tensor.name} gave {name} of shape {shape}, not {expected.get(name)}"
                    )
                entries[name] = (start, out.tell(), shape)
        _write_safetensors(folder / "model.safetensors", scratch, entries)
    finally:
        scratch.unlink(missing_ok=True)
    skeleton.config.architectures = [type(skeleton).__name__]  # as save_pretrained records it
    skeleton.config.save_pretrained(folder)
    skeleton.generation_config.save_pretrained(folder)


def _write_safetensors(path: Path, scratch: Path, entries: dict[str, tuple[int, int, tuple[int, ...]]]) -> None:
    """Lay out the float32 tensors held in ``scratch`` as a safetensors file, name order, as safetensors does."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(entries):
        start, stop, shape = entries[name]
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + stop - start]}
        offset += stop - start
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(scratch, "rb") as source, open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(entries):
            start, stop, _ = entries[name]
            source.seek(start)
            for _ in range(start, stop, 1 << 24):
                out.write(source.read(min(1 << 24, stop - source.tell())))
        out.flush()
        os.fsync(out.fileno())


def _header(f: Any) -> tuple[int, dict[str, Any]]:
    (length,) = struct.unpack("<Q", f.read(8))
    return 8 + length, json.loads(f.read(length))


def tensor_shape(path: Path, name: str) -> tuple[int, ...] | None:
    """The shape of float32 tensor ``name`` in the safetensors file at ``path``; None if it has no such tensor."""
    with open(path, "rb") as f:
        entry = _header(f)[1].get(name)
    return tuple(entry["shape"]) if entry is not None and entry["dtype"] == "F32" else None


def read_rows(path: Path, name: str, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of float32 tensor ``name`` in the safetensors file at ``path``, read with plain file I/O:
    a memory map would keep every page it read resident, counted in this process's memory until it is unmapped."""
    with open(path, "rb") as f:
        data_start, header = _header(f)
        entry = header[name]
        if entry["dtype"] != "F32":
            raise ValueError(f"{name} in {path} is {entry['dtype']}, not F32")
        shape = entry["shape"]
        row_bytes = 4 * int(np.prod(shape[1:]))
        stop = min(stop, shape[0])
        f.seek(data_start + entry["data_offsets"][0] + start * row_bytes)
        data = bytearray(f.read((stop - start) * row_bytes))
    return torch.frombuffer(data, dtype=torch.float32).reshape(stop - start, *shape[1:])
