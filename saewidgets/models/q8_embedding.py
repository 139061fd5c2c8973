"""The embedded Gemma's token embedding kept in its GGUF Q8_0 form: a quarter of the memory, the same numbers.

The embedded model's GGUF stores the token embedding, which Gemma ties to the LM head (262,144 x 640 values, 63% of
the model's weights), as Q8_0: blocks of 32 signed 8-bit codes sharing one float16 scale. The float32 checkpoint
holds each value as code x scale, which float32 represents exactly (8 x 11 significant bits), so its 671 MB carry
178 MB of codes and scales. Every generation step and every log probability reads the whole head, so those 671 MB
were resident for most of a demo: the largest part of the quick demo's peak memory, where Binder gives about 2 GB.

Here the codes and scales are what stays in memory, and rows are decoded to float32 where they are used: the
embedding decodes the rows of the tokens it looks up; the head decodes `BLOCK_ROWS` rows at a time into one buffer
reused for the whole call and multiplies. A decoded row equals the checkpoint's row bit for bit (checked over the
whole table when the compact file is written), and on the CPU a block of rows gives the same logits as those rows of
the whole product (the split is over the vocabulary, never over the 640-long sums, and falls where the kernels'
own tiles do: see `BLOCK_ROWS`; `tests/test_q8_embedding.py` checks equality, on Gemma too), so generations, log
probabilities and every result are unchanged (on a GPU the split may move a logit by float rounding). Decoding into
one reused buffer small enough to stay in the CPU's cache keeps the head's product near the float32 head's, which
reads 671 MB from memory each time (a generation took 0.92x its time at 4 prompts and 1.19x at 32 on a noisy VM:
`benchmarks/README.md`, the `steer` rows); a fresh buffer per block would not (page faults).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .._atomic_write import atomic_write_bytes

#: Values per Q8_0 block, each block sharing one float16 scale (GGML's ``QK8_0``).
GROUP = 32
#: Rows of the head decoded per matrix product: 2,048 x 640 float32 is a 5 MB buffer, small enough to be still in the
#: CPU's cache when the product reads it. With a generation step's or a scored text's rows (1-128) the head's product
#: took 1.5-2.7x less time than with 8,192-row (21 MB) blocks, which the product read back from memory (2-core AMD
#: EPYC, 32 MB L3; 1,024 and 4,096 rows were no faster), though 10-20% more while a neighbouring VM used that shared
#: cache (benchmarks/README.md, "Smaller blocks"). Keep it a multiple of 64: on the CPU, blocks that start on a
#: multiple of 16 rows give logits bit for bit equal to the whole product, while other splits (50 or 37 rows) move
#: some logits by an ulp (torch 2.13's CPU kernels, checked in the tests).
BLOCK_ROWS = 2048
#: Rows per product on a GPU, where each block costs a few kernel launches and the cache argument does not hold:
#: the 8,192 rows the CPU used before (not measured on a GPU: no device was lent).
ACCELERATOR_BLOCK_ROWS = 8192
#: The compact table beside the converted checkpoint (codes ``int8 [vocab, d]``, scales' float16 bits
#: ``int16 [vocab, d / 32]``).
COMPACT_FILE = "embed_tokens.q8_0.safetensors"
_GGUF_TENSOR = "token_embd.weight"
_CHECKPOINT_TENSOR = "model.embed_tokens.weight"


def product_block_rows(device: torch.device) -> int:
    """Rows of the head per matrix product on ``device``: `BLOCK_ROWS` on the CPU, `ACCELERATOR_BLOCK_ROWS`
    elsewhere."""
    return BLOCK_ROWS if device.type == "cpu" else ACCELERATOR_BLOCK_ROWS


def decode_rows(codes: torch.Tensor, scale_bits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 rows ``[n, d]`` of Q8_0 ``codes [n, d]`` (int8) and ``scale_bits [n, d / 32]`` (int16 holding
    float16 scales); written into ``out`` (at least ``n`` rows) when given."""
    n, d = codes.shape
    rows = torch.empty(n, d, dtype=torch.float32, device=codes.device) if out is None else out[:n]
    rows.copy_(codes)
    # float32 times float16: the scale is widened exactly, so each value is code x scale rounded once, as in GGML.
    rows.view(n, d // GROUP, GROUP).mul_(scale_bits.view(torch.float16).unsqueeze(-1))
    return rows


def encode_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and scale bits of float32 rows ``[n, d]`` whose values are exactly Q8_0 values (each block of 32 a
    code in [-127, 127] times one float16 scale, as `decode_rows` gives them): the inverse of `decode_rows`.
    Raises ValueError where the rows are not such values (e.g. a fine-tuned or another model's embedding)."""
    n, d = weight.shape
    blocks = weight.detach().float().reshape(n, d // GROUP, GROUP)
    # GGML gives a block's largest value the code 127, and 127 x a float16 scale is exact in float32.
    scale = (blocks.abs().amax(-1) / 127).half()
    codes = torch.where(scale.unsqueeze(-1) > 0, blocks / scale.float().unsqueeze(-1), 0).round()
    codes = codes.clamp(-127, 127).to(torch.int8).reshape(n, d)
    scale_bits = scale.view(torch.int16)
    if not torch.equal(decode_rows(codes, scale_bits), weight.detach().float()):
        raise ValueError(
            "these embedding weights are not Q8_0 values (a code times a float16 scale per 32 values), so the "
            "compact embedding cannot hold them; load the model without it (transformers' from_pretrained of the "
            "checkpoint folder) to change its embedding"
        )
    return codes, scale_bits


def split_q8_0(raw: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``int8 [rows, d]`` and scale bits ``int16 [rows, d / 32]`` of Q8_0 data as GGUF stores it: ``uint8
    [rows, bytes per row]``, each block a float16 scale followed by its 32 codes."""
    rows, row_bytes = raw.shape
    blocks = raw.reshape(rows, row_bytes // (2 + GROUP), 2 + GROUP)
    scale_bits = torch.from_numpy(blocks[..., :2].copy().view(np.int16)[..., 0])
    return torch.from_numpy(blocks[..., 2:].copy().view(np.int8).reshape(rows, -1)), scale_bits


def read_gguf_q8_0(gguf_path: str | Path, name: str = _GGUF_TENSOR) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Codes and scale bits of the Q8_0 tensor ``name`` in a GGUF file, or None when it is stored another way."""
    from gguf import GGMLQuantizationType

    from .gguf_checkpoint import read_tensors

    tensor = next((t for t in read_tensors(gguf_path).tensors if t.name == name), None)
    if tensor is None or tensor.tensor_type != GGMLQuantizationType.Q8_0:
        return None
    return split_q8_0(tensor.data)


def write_compact_table(folder: Path, gguf_path: str | Path, rows_per_check: int = 16384) -> bool:
    """Write `COMPACT_FILE` into the converted checkpoint ``folder`` from the GGUF the checkpoint was made from,
    after checking that it decodes to the checkpoint's embedding bit for bit; False (nothing written) if it does not
    or the GGUF stores the embedding another way."""
    from safetensors.torch import save

    from .gguf_checkpoint import read_rows, tensor_shape

    table = read_gguf_q8_0(gguf_path)
    if table is None:
        return False
    codes, scale_bits = table
    checkpoint = folder / "model.safetensors"
    if tensor_shape(checkpoint, _CHECKPOINT_TENSOR) != tuple(codes.shape):
        return False
    for start in range(0, len(codes), rows_per_check):
        stop = start + rows_per_check
        weight = read_rows(checkpoint, _CHECKPOINT_TENSOR, start, stop)
        if not torch.equal(decode_rows(codes[start:stop], scale_bits[start:stop]), weight):
            return False
    atomic_write_bytes(folder / COMPACT_FILE, save({"codes": codes, "scale_bits": scale_bits}))
    return True


class _WithoutFloatWeight(torch.nn.Module):
    """A module standing in for an embedding or LM head whose ``.weight`` it does not keep: asking for it says what to
    use instead (`_NO_FLOAT_WEIGHT`), rather than torch's bare "has no attribute"."""

    def __getattr__(self, name: str) -> Any:
        if name == "weight":
            raise AttributeError(_NO_FLOAT_WEIGHT)
        return super().__getattr__(name)


class Q8Embedding(_WithoutFloatWeight):
    """A token embedding stored as Q8_0 codes and scales; replaces an ``nn.Embedding`` (or Gemma's scaled one,
    whose ``embed_scale`` multiplies the looked-up rows) with identical outputs."""

    codes: torch.Tensor
    scale_bits: torch.Tensor
    embed_scale: torch.Tensor | None
    _decoded_for_state: weakref.ref[torch.Tensor]

    def __init__(self, codes: torch.Tensor, scale_bits: torch.Tensor, embed_scale: torch.Tensor | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = codes.shape
        # Scales are kept as their float16 bits (int16) so that casting the model to another dtype never rounds them.
        # The state dict holds the float32 ``weight`` instead, as an nn.Embedding's: ``save_pretrained`` writes a
        # checkpoint any transformers can load (not codes it would drop, leaving a random embedding), and loading
        # such a state dict back turns its weight into codes again.
        self.register_buffer("codes", codes, persistent=False)
        self.register_buffer("scale_bits", scale_bits, persistent=False)
        self.register_buffer("embed_scale", embed_scale, persistent=False)
        self.register_state_dict_post_hook(_save_decoded_weight)
        self.register_load_state_dict_pre_hook(_load_decoded_weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        rows = decode_rows(self.codes[flat], self.scale_bits[flat]).view(*input_ids.shape, self.embedding_dim)
        return rows if self.embed_scale is None else rows * self.embed_scale.to(rows.dtype)


#: Why a compact embedding or head has no ``.weight``, and what to use instead.
_NO_FLOAT_WEIGHT = (
    "the embedded model keeps its tied token embedding and LM head as Q8_0 codes, not a float weight: for the "
    "float32 matrix use ModelHandle.unembed (a decoded copy, 671 MB for Gemma), for x @ W.T ModelHandle."
    "unembed_product(x); model.hf.state_dict() and save_pretrained give it as model.embed_tokens.weight"
)


def _save_decoded_weight(module: Q8Embedding, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    weight = decode_rows(module.codes, module.scale_bits)
    state_dict[prefix + "weight"] = weight
    # The tied head gives the same tensor, as a tied nn.Linear's state dict does, without decoding it twice; a weak
    # reference, so the 671 MB go when the state dict does.
    module._decoded_for_state = weakref.ref(weight)


def _save_tied_weight(module: Q8Unembedding, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    table = module._tied[0]
    shared = getattr(table, "_decoded_for_state", lambda: None)()
    state_dict[prefix + "weight"] = shared if shared is not None else decode_rows(table.codes, table.scale_bits)


def _load_tied_weight(module: Q8Unembedding, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A tied head's weight is the embedding's, loaded there: accept the copy a state dict holds, if it is that."""
    weight = state_dict.pop(prefix + "weight", None)
    table = module._tied[0]
    if weight is not None and not torch.equal(
        weight.to(table.codes.device), decode_rows(table.codes, table.scale_bits)
    ):
        raise ValueError(
            f"{prefix}weight differs from the token embedding, but the compact head is tied to it; load the model "
            "without the compact embedding (transformers' from_pretrained of the checkpoint folder) for an untied head"
        )


def _load_decoded_weight(
    module: Q8Embedding,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    weight = state_dict.pop(prefix + "weight", None)
    if weight is None:
        if strict:
            missing_keys.append(prefix + "weight")
        return
    if tuple(weight.shape) != tuple(module.codes.shape):
        raise ValueError(
            f"{prefix}weight has shape {tuple(weight.shape)}, the compact embedding {tuple(module.codes.shape)}"
        )
    codes, scale_bits = encode_rows(weight.to(module.codes.device))
    module.codes.copy_(codes)
    module.scale_bits.copy_(scale_bits)


class Q8Unembedding(_WithoutFloatWeight):
    """The LM head tied to a `Q8Embedding`: logits ``hidden @ W.T``, `BLOCK_ROWS` decoded rows of ``W`` at a time."""

    def __init__(self, embedding: Q8Embedding):
        super().__init__()
        self.out_features, self.in_features = embedding.num_embeddings, embedding.embedding_dim
        # A tuple, not a submodule: the table is stored, saved and moved between devices once, by the embedding.
        self._tied = (embedding,)
        self.bias = None
        self.register_state_dict_post_hook(_save_tied_weight)
        self.register_load_state_dict_pre_hook(_load_tied_weight)

    @property
    def device(self) -> torch.device:
        return self._tied[0].codes.device

    def decoded_weight(self) -> torch.Tensor:
        """The whole float32 weight ``[vocab, d]``, a new tensor (671 MB for Gemma): only for code that needs it."""
        return decode_rows(self._tied[0].codes, self._tied[0].scale_bits)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Float32 rows ``W[ids]`` ``[len(ids), d]``, decoded on their own (no whole weight)."""
        table = self._tied[0]
        return decode_rows(table.codes[ids], table.scale_bits[ids])

    def weight_blocks(self, rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, W[start:start + rows])`` (default `product_block_rows`) over the vocabulary, decoded into one
        reused buffer: use each block before asking for the next."""
        rows = rows or product_block_rows(self.device)
        table = self._tied[0]
        buffer = torch.empty(min(rows, self.out_features), self.in_features, device=self.device)
        for start in range(0, self.out_features, rows):
            stop = min(start + rows, self.out_features)
            yield start, decode_rows(table.codes[start:stop], table.scale_bits[start:stop], out=buffer)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return _BlockwiseUnembedding.apply(hidden, self)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden @ W.T``, a block of decoded rows at a time (no autograd)."""
        logits = hidden.new_empty(*hidden.shape[:-1], self.out_features)
        for start, block in self.weight_blocks():
            logits[..., start : start + len(block)] = torch.nn.functional.linear(hidden, block.to(hidden.dtype))
        return logits

    def input_gradient(self, grad_logits: torch.Tensor) -> torch.Tensor:
        """``grad_logits @ W``, summed a block of decoded rows at a time."""
        grad = grad_logits.new_zeros(*grad_logits.shape[:-1], self.in_features)
        for start, block in self.weight_blocks():
            grad += grad_logits[..., start : start + len(block)] @ block.to(grad_logits.dtype)
        return grad


class _BlockwiseUnembedding(torch.autograd.Function):
    """The head's product with a backward pass that decodes the blocks again instead of keeping them: autograd
    would otherwise hold every decoded block (the whole float32 head, 671 MB for Gemma) until the backward pass,
    as attribution's gradients need. The gradient is summed block by block, so it equals the float32 head's to
    float rounding (not bit for bit, unlike the logits)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, head: Q8Unembedding) -> torch.Tensor:
        ctx.head = head
        return head.logits(hidden)

    @staticmethod
    def backward(ctx: Any, grad_logits: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        return (ctx.head.input_gradient(grad_logits) if ctx.needs_input_grad[0] else None), None


def use_compact_embedding(hf_model: Any, folder: Path) -> bool:
    """Swap the tied token embedding and LM head of ``hf_model`` (loaded float32 from ``folder``) for the Q8_0
    table `write_compact_table` put in ``folder``. False (model unchanged) where the model is not float32 with a
    tied head, or the folder has no table that matches it."""
    embedding, head = hf_model.get_input_embeddings(), hf_model.get_output_embeddings()
    tied = isinstance(head, torch.nn.Linear) and head.bias is None and head.weight is embedding.weight
    if not tied or embedding.weight.dtype != torch.float32:
        return False
    path = folder / COMPACT_FILE
    if not path.exists():
        return False
    from safetensors.torch import load_file

    table = load_file(str(path))
    compact = Q8Embedding(table["codes"], table["scale_bits"], getattr(embedding, "embed_scale", None))
    probe = torch.tensor([0, 1, 2, compact.num_embeddings - 1])  # a few rows: reading them all would page them in
    with torch.no_grad():
        if compact.codes.shape != embedding.weight.shape or not torch.equal(compact(probe), embedding(probe)):
            warnings.warn(f"{path} does not match the checkpoint beside it; using the float32 embedding", stacklevel=2)
            return False
    hf_model.set_input_embeddings(compact.to(embedding.weight.device))
    hf_model.set_output_embeddings(Q8Unembedding(compact))
    return True


def as_head_input(head: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the LM head's device, in the dtype its product is taken in: float32 for a `Q8Unembedding` (its rows
    are decoded to float32), else the weight's."""
    if isinstance(head, Q8Unembedding):
        return x.to(head.device, torch.float32)
    weight = cast(torch.Tensor, head.weight)
    return x.to(weight.device, weight.dtype)
