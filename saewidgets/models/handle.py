"""One handle over an nnsight-wrapped causal language model.

`ModelHandle` answers every question the rest of saewidgets asks of a model — its tokenizer, how many decoder
blocks it has, where the residual stream after block L lives, how to read a residual direction as logits — for any
decoder layout (GPT-2 ``transformer.h``, Llama/Gemma/Mistral/Qwen ``model.layers``, GPT-NeoX ``gpt_neox.layers``).
It also owns the lock that keeps widget callbacks from tracing from several threads at once (one for the process).

Where models come from (the embedded offline Gemma, the hub, tiny test models) is the rest of `saewidgets.models`.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .q8_embedding import Q8Unembedding, as_head_input

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Where decoder blocks and the final norm live, per architecture family: (blocks, final norm).
_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("model.layers", "model.norm"),  # Llama, Gemma 1-3, Mistral, Qwen, Phi-3
    ("transformer.h", "transformer.ln_f"),  # GPT-2, GPT-J, Bloom-style
    ("gpt_neox.layers", "gpt_neox.final_layer_norm"),  # Pythia / GPT-NeoX
    ("model.decoder.layers", "model.decoder.final_layer_norm"),  # OPT
    ("model.language_model.layers", "model.language_model.norm"),  # multimodal Gemma 3 wrappers
)

LayerSpec = int | str
#: Layers by name: block index as a function of the number of blocks.
NAMED_DEPTHS: dict[str, Callable[[int], int]] = {"middle": lambda n: n // 2, "late": lambda n: 2 * n // 3}


def residual_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a decoder block's output.

    transformers >= 5 returns a plain ``[batch, tokens, d_model]`` tensor; older versions and some architectures
    return a tuple whose first item is the hidden state. Indexing a tensor with ``[0]`` would silently return batch
    row 0, so the two cases are told apart by type, never by indexing.
    """
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def with_residual(output: Any, hidden: torch.Tensor) -> Any:
    """A block output of the same structure as ``output`` whose hidden state is ``hidden``."""
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    return hidden


def get_path(root: Any, dotted: str) -> Any:
    """The attribute at ``dotted`` (e.g. ``"model.layers"``) below ``root``."""
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _has_path(root: torch.nn.Module, dotted: str) -> bool:
    try:
        get_path(root, dotted)
    except AttributeError:
        return False
    return True


#: The one lock every trace in the process holds, whichever model it traces. Per-model locks are not enough:
#: nnsight's process-wide state is shared by all models. Entering a trace site for the first time parses and
#: compiles its source, and CPython 3.11 keeps the AST converter's recursion depth in interpreter-wide state, so
#: two threads converting ASTs at once fail with "SystemError: AST constructor recursion depth mismatch"; and
#: ``with t.backward():`` swaps the ``torch.Tensor.grad`` property for the whole process while it runs. Traces of
#: two models therefore run one after the other (re-entrant: a trace may start another).
NNSIGHT_LOCK = threading.RLock()


class TraceLock:
    """The lock held around every trace of one model (widget callbacks run on threads).

    All handles share `NNSIGHT_LOCK` (see there why one lock for the process); re-entrant. Every trace already
    passes through it, so it is also where a remote model's failures are made readable: on leaving the block, an
    error from talking to NDIF (time-out, refused key, unknown model) is re-raised as a
    `saewidgets.remote.RemoteModelError` that says what to do, with the API key scrubbed from the message.
    """

    def __init__(self, handle: "ModelHandle") -> None:
        self._lock = NNSIGHT_LOCK
        self._handle = handle

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "TraceLock":
        self._lock.acquire()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._lock.release()
        if exc is not None and self._handle.remote:
            from ..remote import translate_error

            readable = translate_error(exc, self._handle.name)
            if readable is not None:
                raise readable from None  # the original may quote request headers, which hold the key


def check_text(text: str, what: str = "The text") -> None:
    """Refuse text that is not valid Unicode (a lone surrogate), which tokenizers reject with an obscure error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} holds a lone surrogate ({text[err.start]!r} at character {err.start:,}, in "
            f"{text[max(0, err.start - 20) : err.start + 20]!r}), which is not valid Unicode: it usually comes from "
            "bytes decoded with errors='surrogateescape'. Clean it first, e.g. "
            "text.encode('utf-8', 'replace').decode('utf-8')."
        ) from None


class ModelHandle:
    """A causal LM wrapped for tracing, plus the facts about it that analysis needs.

    Build one with `saewidgets.load_model`; the constructor takes an already-loaded HF model and its tokenizer.

    Attributes:
        nn: the ``nnsight.TransformersModel`` (trace / generate through it).
        hf: the underlying ``transformers`` model.
        tokenizer: its tokenizer, set to pad on the left (decoder models batch left-padded).
        name: a human-readable model name, recorded in SAE configs and statistics.
        lock: a re-entrant `TraceLock` (process-wide, see `NNSIGHT_LOCK`); hold it around every trace or generate
            (widget callbacks run on threads).
        remote: False (run here), True (run on NDIF) or ``"local"`` (nnsight's simulation: serialize every trace
            as NDIF would, run it here; for tests).
    """

    def __init__(
        self, hf_model: PreTrainedModel, tokenizer: Any, name: str, *, remote: bool | str = False, envoy: Any = None
    ) -> None:
        import nnsight

        self.hf = hf_model.eval()
        # A remote model arrives already wrapped (built on the meta device from its hub id); a local one is
        # wrapped here around the loaded weights, which makes no network connection.
        self.nn = envoy if envoy is not None else nnsight.TransformersModel(hf_model, tokenizer=tokenizer)
        self.tokenizer = self.nn.tokenizer
        self.name = name
        self.remote = remote
        self.lock = TraceLock(self)
        self._blocks_path, self._norm_path = self._find_layout(hf_model)

    @staticmethod
    def _find_layout(hf_model: torch.nn.Module) -> tuple[str, str]:
        for blocks, norm in _LAYOUTS:
            if _has_path(hf_model, blocks):
                return blocks, norm
        known = ", ".join(b for b, _ in _LAYOUTS)
        raise ValueError(
            f"Could not find the decoder blocks of {type(hf_model).__name__}: looked for {known}. "
            "saewidgets supports decoder-only causal LMs with one of these layouts."
        )

    def __repr__(self) -> str:
        where = {True: "NDIF", "local": "NDIF simulated locally"}.get(self.remote, str(self.device))
        return f"ModelHandle({self.name!r}, layers={self.n_layers}, d_model={self.d_model}, on {where})"

    # -- shape facts ------------------------------------------------------------------------------------------

    @cached_property
    def n_layers(self) -> int:
        """Number of decoder blocks."""
        return len(get_path(self.hf, self._blocks_path))

    @cached_property
    def d_model(self) -> int:
        """Width of the residual stream."""
        embedding = self.hf.get_input_embeddings()
        return int(getattr(embedding, "embedding_dim", None) or embedding.weight.shape[1])

    @cached_property
    def vocab_size(self) -> int:
        head = self.hf.get_output_embeddings()
        return int(getattr(head, "out_features", None) or self.unembed.shape[0])

    @property
    def device(self) -> torch.device:
        """Where input tensors go: the model's device; the CPU for a remote model (its weights here are on the meta
        device, and requests carry CPU tensors)."""
        if self.remote:
            return torch.device("cpu")
        return next(self.hf.parameters()).device

    @cached_property
    def bos_id(self) -> int | None:
        """The BOS token id if the tokenizer puts one in front of every text, else None (GPT-2 does not)."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return None
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return bos if ids and ids[0] == bos else None

    @cached_property
    def max_context(self) -> int:
        """The longest sequence the model accepts, in tokens."""
        cfg = self.hf.config
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    # -- sites ------------------------------------------------------------------------------------------------

    def resolve_layer(self, layer: LayerSpec) -> int:
        """Turn ``layer`` into a block index: an int, a negative int counted from the end, ``"middle"`` (the
        paper's choice, ``n // 2``) or ``"late"`` (two thirds deep, ``2n // 3``: where features that steer
        the output concentrate)."""
        if isinstance(layer, str):
            if layer in NAMED_DEPTHS:
                return NAMED_DEPTHS[layer](self.n_layers)
            raise ValueError(
                f"layer={layer!r} is not understood: pass an int in [0, {self.n_layers}), 'middle' or 'late'."
            )
        if isinstance(layer, bool) or not hasattr(layer, "__index__"):
            raise TypeError(f"layer must be an int, 'middle' or 'late', got {type(layer).__name__} ({layer!r}).")
        layer = operator.index(layer)  # numpy and torch integers are block numbers too
        n = self.n_layers
        if not -n <= layer < n:
            raise ValueError(
                f"layer={layer} is out of range for {self.name}, which has {n} decoder blocks: "
                f"pass 0..{n - 1}, -{n}..-1, 'middle' (= {self.resolve_layer('middle')}) or 'late' "
                f"(= {self.resolve_layer('late')})."
            )
        return layer % n

    def block(self, layer: LayerSpec) -> Any:
        """The nnsight envoy of decoder block ``layer``; its ``.output`` is the residual stream after the block."""
        return get_path(self.nn, self._blocks_path)[self.resolve_layer(layer)]

    def site_name(self, layer: LayerSpec) -> str:
        """The module path of the residual site after block ``layer``, e.g. ``model.layers.9``."""
        return f"{self._blocks_path}.{self.resolve_layer(layer)}"

    @property
    def trace_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every ``nn.trace`` / ``nn.generate`` call passes (remote execution)."""
        return {"remote": self.remote} if self.remote else {}

    # -- reading residual directions as logits -----------------------------------------------------------------

    @cached_property
    def final_norm(self) -> torch.nn.Module:
        """The norm applied to the last residual stream before the unembedding."""
        return get_path(self.hf, self._norm_path)

    @property
    def unembed(self) -> torch.Tensor:
        """The unembedding matrix ``[vocab, d_model]`` (the LM head's weight). A head kept compact (the embedded
        Gemma's, `Q8Unembedding`) is decoded whole for this: 671 MB for Gemma; `unembed_product` needs no copy."""
        head = self.hf.get_output_embeddings()
        if isinstance(head, Q8Unembedding):
            return head.decoded_weight()
        return head.weight

    def unembed_product(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ unembed.T``: logits ``[..., vocab]`` of vectors ``[..., d_model]`` without the head's bias, a block
        of the vocabulary at a time where the head is kept compact."""
        head = self.hf.get_output_embeddings()
        x = as_head_input(head, x)
        return head(x) if isinstance(head, Q8Unembedding) else x @ head.weight.detach().T

    @cached_property
    def unembed_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[d_model]`` and covariance ``[d_model, d_model]`` of the unembedding's rows over the vocabulary
        (float64, computed once per model): the mean and variance of any direction's logits over the vocabulary
        without its ``[vocab]`` logits (`saewidgets.models.vocab.unembed_moments`)."""
        from .vocab import unembed_moments

        return unembed_moments(self.hf.get_output_embeddings())

    def unembed_rows(self, ids: Sequence[int]) -> torch.Tensor:
        """Float32 rows ``[len(ids), d_model]`` of the unembedding for the tokens ``ids`` (no whole weight)."""
        from .vocab import unembed_rows

        return unembed_rows(self.hf.get_output_embeddings(), ids)

    def logits_of_residual(self, residual: torch.Tensor) -> torch.Tensor:
        """Logits the model would produce from final residual stream vectors ``[..., d_model]``."""
        with torch.no_grad():
            return self.hf.get_output_embeddings()(self.final_norm(residual.to(self.device)))

    # -- tokens -----------------------------------------------------------------------------------------------

    def tokens_to_str(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Each token id as the text it stands for (raw and untrusted: escape it before it becomes HTML)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def encode(self, text: str, *, add_bos: bool = True, split_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, with the model's BOS in front when it uses one and ``add_bos`` is set.

        Text is untrusted: with ``split_special_tokens`` (the default) a special-token string inside it, such as
        ``"<bos>"`` or ``"<|endoftext|>"``, is tokenized as the characters it is, never turned into the special
        token (which would put a BOS residual, a huge outlier, into the data). Pass False only for text you wrote
        with special tokens on purpose, e.g. a chat template.
        """
        check_text(text)
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=split_special_tokens)["input_ids"]
        if add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return list(ids)
