"""SAE files: saewidgets' own format, SAELens folders (both ways), Gemma Scope parameters, and online ids.

Formats:
- native: a folder with ``sae.safetensors`` (W_enc, b_enc, W_dec, b_dec, threshold?) and ``config.json`` (the
  `SAEConfig` plus ``"format": "saewidgets.sae/1"``), written into a temporary folder and renamed into place.
- SAELens 6.x: ``cfg.json`` + ``sae_weights.safetensors``; architectures ``standard`` (= relu), ``topk``, ``jumprelu``.
  SAELens has no input scale, so it is folded into the weights on export (W_enc * s, W_dec / s, b_dec / s, exactly
  what SAELens' ``fold_activation_norm_scaling_factor`` does); BatchTopK exports as JumpReLU with its threshold, as
  SAELens itself does. saewidgets' own fields ride along in ``metadata.saewidgets`` and come back on import.
- Gemma Scope: ``params.npz`` (Gemma Scope 1) or ``params.safetensors`` (Gemma Scope 2): JumpReLU with ``threshold``
  and no ``b_dec`` subtraction before encoding.

Weights are read only from safetensors, ``np.load(allow_pickle=False)`` or ``torch.load(weights_only=True)``: a
pickle is refused, never executed.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .._atomic_write import atomic_dir, finish_interrupted_save
from .base import SAE
from .config import Architecture, SAEConfig

NATIVE_FORMAT = "saewidgets.sae/1"
NATIVE_WEIGHTS, NATIVE_CONFIG = "sae.safetensors", "config.json"
SAELENS_WEIGHTS, SAELENS_CONFIG = "sae_weights.safetensors", "cfg.json"
GEMMA_SCOPE_FILES = ("params.npz", "params.safetensors")
_SAELENS_VERSION = "6.0.0"  # the SAELens file format we write (its loader treats < 6.0 configs as legacy)
_SAELENS_TO_ARCH = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
_PICKLE_SUFFIXES = (".pkl", ".pickle")


class SAEFileError(ValueError):
    """An SAE file or folder that cannot be loaded: the message names the file, what is wrong, and what to do."""


# -- saving ---------------------------------------------------------------------------------------------------


def save_sae(
    sae: SAE, directory: str | os.PathLike, format: Literal["native", "saelens"] = "native", overwrite: bool = False
) -> Path:
    """Write ``sae`` to ``directory`` atomically (nothing half-written is ever visible there) and return the path.

    ``format="native"`` keeps everything (``load_sae`` restores the identical SAE); ``format="saelens"`` writes a
    folder that ``sae_lens.SAE.load_from_disk`` opens and that encodes identically. Only the SAE's files are written
    or replaced; anything else in the folder is kept. A non-empty folder that saewidgets did not write is refused
    unless ``overwrite=True``, and an existing file is never replaced by a folder.
    """
    from safetensors.torch import save_file

    if format == "native":
        tensors, config = _state(sae), {"format": NATIVE_FORMAT, **sae.cfg.to_dict()}
        names = (NATIVE_WEIGHTS, NATIVE_CONFIG)
    elif format == "saelens":
        tensors, config = _to_saelens(sae)
        names = (SAELENS_WEIGHTS, SAELENS_CONFIG)
    else:
        raise ValueError(f"format={format!r} is not known: use 'native' or 'saelens'.")
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / names[0]))
        (tmp / names[1]).write_text(json.dumps(config, indent=1))
    return Path(directory)


def _state(sae: SAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.state_dict().items()}


def _to_saelens(sae: SAE) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """SAELens tensors and ``cfg.json`` for ``sae``, with the input scale folded into the weights."""
    cfg, s = sae.cfg, sae.cfg.input_scale
    tensors = _state(sae)
    tensors["W_enc"] = (tensors["W_enc"] * s).contiguous()
    tensors["W_dec"] = (tensors["W_dec"] / s).contiguous()
    tensors["b_dec"] = (tensors["b_dec"] / s).contiguous()
    architecture = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}[
        cfg.architecture
    ]
    lens_cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.n_features,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",  # scale folded below "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": _SAELENS_VERSION,
            "sae_lens_training_version": None,
            "model_name": cfg.model_name,
            "hook_name": cfg.provenance.get("saelens_hook_name") or cfg.site,
            "hf_hook_name": cfg.site,
            "neuronpedia_id": cfg.neuronpedia_id,
            "hook_head_index": None,
            "prepend_bos": True,
            "saewidgets": {**cfg.to_dict(), "input_scale_folded": s},
        },
    }
    if architecture == "topk":
        lens_cfg.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    return tensors, lens_cfg


# -- loading --------------------------------------------------------------------------------------------------


def load_sae(
    path_or_id: str | os.PathLike,
    sae_id: str | None = None,
    *,
    device: str | torch.device = "cpu",
    fold_W_dec_norm: bool = False,
) -> SAE:
    """Load an SAE from a folder or file (native, SAELens, Gemma Scope), a SAELens release + ``sae_id`` (``pip
    install 'saewidgets[saelens]'``), or a Hugging Face repo id (``"org/repo"`` or ``"org/repo/sub/folder"``) online.

    ``fold_W_dec_norm=True`` gives every decoder row unit norm (see `fold_decoder_norm`): the same reconstructions,
    with activations in units of the residual norm each latent writes, as SAELens' dashboards show them.
    """
    if os.fspath(path_or_id) == "":  # Path("") is the current folder
        raise FileNotFoundError(
            "load_sae('') got an empty path: pass the SAE's folder or file, e.g. load_sae('my_sae')."
        )
    path = Path(path_or_id)
    if path.exists():
        sae = _load_local(path)
    elif sae_id is not None:
        sae = _load_saelens_release(str(path_or_id), sae_id)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?", str(path_or_id)):
        sae = _load_local(_download_hf(str(path_or_id)))
    else:
        raise FileNotFoundError(
            f"No SAE at {str(path_or_id)!r}: it is not a file or folder here, and not a Hugging Face repo id "
            "('org/repo[/folder]'). For a SAELens release pass load_sae(release, sae_id)."
        )
    if fold_W_dec_norm:
        tensors = {k: v.detach().clone() for k, v in sae.state_dict().items()}
        fold_decoder_norm(tensors, sae.cfg.architecture, path_or_id)
        sae.cfg.provenance = {**sae.cfg.provenance, "W_dec_norm_folded": True}
        sae = build_sae(sae.cfg, tensors, path_or_id)
    return sae.to(device).eval()


def _load_local(path: Path) -> SAE:
    if path.is_dir():
        finish_interrupted_save(path)
        files = {p.name for p in path.iterdir()}
        if NATIVE_CONFIG in files and NATIVE_WEIGHTS in files:
            return _load_native(path)
        if SAELENS_CONFIG in files:
            return _load_saelens_dir(path)
        for name in GEMMA_SCOPE_FILES:
            if name in files:
                return _load_gemma_scope(path / name)
        raise SAEFileError(
            f"{path} holds no SAE saewidgets can read: expected {NATIVE_WEIGHTS} + {NATIVE_CONFIG} (saewidgets), "
            f"{SAELENS_WEIGHTS} + {SAELENS_CONFIG} (SAELens) or {' / '.join(GEMMA_SCOPE_FILES)} (Gemma Scope); "
            f"found {sorted(files)[:10] or 'nothing'}."
        )
    if path.name in (NATIVE_WEIGHTS, NATIVE_CONFIG, SAELENS_WEIGHTS, SAELENS_CONFIG):
        return _load_local(path.parent)
    return _load_gemma_scope(path)


def _load_native(directory: Path) -> SAE:
    config_path = directory / NATIVE_CONFIG
    data = _read_json(config_path)
    if data.get("format") != NATIVE_FORMAT:
        raise SAEFileError(
            f"{config_path} is not a saewidgets SAE config (its format is {data.get('format')!r}, "
            f"expected {NATIVE_FORMAT!r})."
        )
    cfg = _config(data, config_path)
    return build_sae(cfg, read_tensors(directory / NATIVE_WEIGHTS), directory / NATIVE_WEIGHTS)


def _load_saelens_dir(directory: Path) -> SAE:
    config_path, weights_path = directory / SAELENS_CONFIG, directory / SAELENS_WEIGHTS
    if not weights_path.exists():
        raise SAEFileError(
            f"{directory} has {SAELENS_CONFIG} but no {SAELENS_WEIGHTS}: the SAELens folder is incomplete; "
            "copy or download it again."
        )
    return from_saelens(_read_json(config_path), read_tensors(weights_path), weights_path)


#: SAELens architectures saewidgets' `SAE` cannot hold, and why (said in the error, so users know it is not a bug).
UNSUPPORTED_SAELENS = {
    "gated": "a gated SAE decides which latents fire with a separate gating path (r_mag, b_gate, b_mag) that "
    "saewidgets' SAE has no parameters for",
    "transcoder": "a transcoder reads one site and writes another (hook_name_out): saewidgets' metrics, attribution "
    "and steering assume an SAE that reconstructs the activations it reads",
    "skip_transcoder": "a skip transcoder reads one site and writes another through an extra linear skip path",
    "jumprelu_transcoder": "a transcoder reads one site and writes another (hook_name_out)",
    "jumprelu_skip_transcoder": "a transcoder reads one site and writes another through an extra linear skip path",
    "abstopk": "AbsTopK keeps the k largest |pre-activations|, negative ones included, which saewidgets' TopK does not",
    "matching_pursuit": "matching pursuit encodes iteratively against the residual, not with one encoder matrix",
    "temporal": "a temporal SAE encodes each token together with its context",
}
#: Per-token normalisations a constant input scale cannot reproduce (each token would need its own scale).
_PER_TOKEN_NORMS = ("constant_norm_rescale", "layer_norm")


def from_saelens(lens_cfg: dict[str, Any], tensors: dict[str, torch.Tensor], source: str | os.PathLike) -> SAE:
    """An `SAE` from a SAELens 6.x config dict and state dict (from disk, or from a ``sae_lens.SAE`` in memory).

    Kept from the config: ``hf_hook_name`` (the Hugging Face module the SAE reads, which is saewidgets' ``site``;
    SAELens' TransformerLens ``hook_name`` is kept in ``provenance`` for export), ``neuronpedia_id``, and
    ``normalize_activations`` (with a ``norm_scaling_factor``, if the config carries one, as ``input_scale``).
    """
    meta = lens_cfg.get("metadata") or {}
    if "architecture" not in lens_cfg:
        # SAELens < 6 wrote the activation function instead of an architecture.
        topk = lens_cfg.get("activation_fn_str") == "topk" or lens_cfg.get("activation_fn") == "topk"
        lens_cfg = {
            **lens_cfg,
            "architecture": "topk" if topk else "standard",
            "k": (lens_cfg.get("activation_fn_kwargs") or {}).get("k"),
        }
    name = lens_cfg["architecture"]
    arch = _SAELENS_TO_ARCH.get(name)
    if arch is None:
        why = UNSUPPORTED_SAELENS.get(name, "saewidgets does not know this architecture")
        raise SAEFileError(
            f"{source}: SAELens architecture {name!r} is not supported by saewidgets yet: {why}. Supported: "
            f"{', '.join(_SAELENS_TO_ARCH)}. Use it with sae_lens directly (sae_lens.SAE.load_from_disk / "
            "from_pretrained)."
        )
    input_scale, normalize = _saelens_input_scale(lens_cfg, source)
    if lens_cfg.get("reshape_activations", "none") not in ("none", False, None):
        raise SAEFileError(
            f"{source}: reshape_activations={lens_cfg['reshape_activations']!r} (an attention-output SAE over "
            "per-head activations) is not supported: saewidgets reads residual-stream SAEs."
        )
    tensors = dict(tensors)
    if arch == "topk" and lens_cfg.get("rescale_acts_by_decoder_norm"):  # selection already weighs by the norms
        _scale_latents(tensors, tensors["W_dec"].norm(dim=1).clamp_min(1e-8))
    ours = meta.get("saewidgets") or {}
    get = lambda key: meta.get(key) or lens_cfg.get(key)  # noqa: E731  (SAELens < 6 kept them at the top level)
    hook_name, hf_hook_name = get("hook_name") or "", get("hf_hook_name") or ""
    site = ours.get("site") or hf_hook_name or hook_name
    provenance = ours.get("provenance") or {"source": str(source), "format": "saelens"}
    if hook_name and hook_name != site:
        provenance = {**provenance, "saelens_hook_name": hook_name}
    cfg = _config(
        {
            "d_in": lens_cfg.get("d_in"),
            "n_features": lens_cfg.get("d_sae"),
            "architecture": ours.get("architecture", arch) if arch == "jumprelu" else arch,
            "k": lens_cfg.get("k", ours.get("k")),
            "model_name": get("model_name") or "",
            "layer": ours.get("layer", _layer_of(site) if _layer_of(site) is not None else _layer_of(hook_name)),
            "site": site,
            "apply_b_dec_to_input": lens_cfg.get("apply_b_dec_to_input", True),
            "input_scale": input_scale,
            "normalize_activations": normalize,
            "neuronpedia_id": get("neuronpedia_id") or ours.get("neuronpedia_id"),
            "provenance": provenance,
        },
        source,
    )
    return build_sae(cfg, tensors, source)


def _saelens_input_scale(lens_cfg: dict[str, Any], source: str | os.PathLike) -> tuple[float, str]:
    """(input scale, normalisation name) for SAELens' ``normalize_activations``, or a clear error."""
    normalize = lens_cfg.get("normalize_activations")
    normalize = "none" if normalize in (None, False, "none") else normalize
    if normalize == "none":
        return 1.0, "none"
    if normalize == "expected_average_only_in":
        factor = lens_cfg.get("norm_scaling_factor")
        if factor is None:
            warnings.warn(
                f"{source}: normalize_activations='expected_average_only_in' but the config has no "
                "norm_scaling_factor, so inputs are read raw (as sae_lens itself reads this file). If you know the "
                "factor, set it as sae.cfg.input_scale.",
                stacklevel=4,
            )
            return 1.0, normalize
        return float(factor), normalize
    if normalize in _PER_TOKEN_NORMS:
        raise SAEFileError(
            f"{source}: normalize_activations={normalize!r} rescales every token by its own norm at run time; "
            "saewidgets' SAE has one constant input scale, so it would encode differently. Not supported yet."
        )
    raise SAEFileError(
        f"{source}: normalize_activations={normalize!r} is not supported. In SAELens, fold it into the weights "
        "first (e.g. sae.fold_activation_whitening(...) for covariance_whitening) and save again."
    )


def fold_decoder_norm(tensors: dict[str, torch.Tensor], arch: str, source: str | os.PathLike = "SAE") -> None:
    """Give every decoder row unit norm, moving its norm into the encoder (``W_enc``, ``b_enc`` and a JumpReLU /
    BatchTopK ``threshold`` scale with it), in place. The reconstruction is unchanged and each latent's activation
    becomes its contribution's norm, comparable across latents (as SAELens' ``fold_W_dec_norm``).

    Refused for TopK: scaling latents differently changes which k are largest, so the SAE would encode differently.
    """
    norms = tensors["W_dec"].norm(dim=1).clamp_min(1e-8)
    if arch == "topk" and not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
        raise SAEFileError(
            f"{source}: fold_W_dec_norm would change which latents a TopK SAE selects (their "
            "pre-activations would be rescaled unequally); load it without fold_W_dec_norm."
        )
    _scale_latents(tensors, norms)


def _scale_latents(tensors: dict[str, torch.Tensor], norms: torch.Tensor) -> None:
    """Multiply latent i's encoder side by ``norms[i]`` and divide its decoder row by it."""
    tensors["W_enc"] = tensors["W_enc"] * norms
    tensors["b_enc"] = tensors["b_enc"] * norms
    tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    if "threshold" in tensors:
        tensors["threshold"] = tensors["threshold"] * norms


def _layer_of(site: str) -> int | None:
    match = re.search(r"(?:layers|blocks|h)\.(\d+)", site)
    return int(match.group(1)) if match else None


def _load_gemma_scope(path: Path) -> SAE:
    """Gemma Scope ``params.npz`` / ``params.safetensors`` (or any file of W_enc, W_dec, b_enc, b_dec[, threshold])."""
    raw = read_tensors(path)
    tensors = {_GEMMA_KEYS.get(k.lower(), k): v for k, v in raw.items()}
    if "W_enc" not in tensors:
        raise SAEFileError(
            f"{path} has no encoder weights (found keys {sorted(raw)}): expected W_enc, W_dec, b_enc, "
            "b_dec and (for JumpReLU) threshold, as Gemma Scope's params.npz holds."
        )
    d_in, n_features = tensors["W_enc"].shape
    arch: Architecture = "jumprelu" if "threshold" in tensors else "relu"
    cfg = SAEConfig(
        d_in=int(d_in),
        n_features=int(n_features),
        architecture=arch,
        apply_b_dec_to_input=False,
        provenance={"source": str(path), "format": "gemma-scope"},
    )
    return build_sae(cfg, tensors, path)


_GEMMA_KEYS = {"w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec", "threshold": "threshold"}


def _load_saelens_release(release: str, sae_id: str) -> SAE:
    try:
        from sae_lens import SAE as LensSAE
    except ImportError as err:
        raise ImportError("Loading a SAELens release needs sae-lens: pip install 'saewidgets[saelens]'") from err
    lens = LensSAE.from_pretrained(release, sae_id, device="cpu")
    cfg = lens.cfg.to_dict()
    cfg["metadata"] = {
        **cfg.get("metadata", {}),
        "saewidgets": {"provenance": {"source": f"{release}/{sae_id}", "format": "saelens-release"}},
    }
    return from_saelens(cfg, dict(lens.state_dict()), f"{release}/{sae_id}")


def _download_hf(repo: str) -> Path:
    """Download a Hugging Face repo (or one folder of it) and return the local folder."""
    from huggingface_hub import snapshot_download

    parts = repo.split("/")
    repo_id, folder = "/".join(parts[:2]), "/".join(parts[2:])
    local = snapshot_download(repo_id, allow_patterns=[f"{folder}/*"] if folder else None)
    return Path(local, folder)


# -- checked reading ------------------------------------------------------------------------------------------


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from safetensors, npz/npy or a weights-only torch file, with errors that name the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise SAEFileError(f"{path} does not exist: the SAE folder is incomplete; save or download it again.")
    if not path.is_file():  # a device (/dev/zero), pipe or socket: reading it would never end or mean nothing
        raise SAEFileError(f"{path} is not a regular file (a device, pipe or socket): pass an SAE file or folder.")
    suffix = path.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise SAEFileError(_pickle_message(path))
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix in (".npz", ".npy"):
            with np.load(path, allow_pickle=False) as arrays:
                return {k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        if "pickle" in text.lower() or "weights_only" in text:
            raise SAEFileError(_pickle_message(path)) from err
        raise SAEFileError(
            f"{path} could not be read as {suffix or 'a weights file'} ({type(err).__name__}: {text.splitlines()[0][:200] if text else ''}). "
            "It is probably truncated or corrupt: save or download it again."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SAEFileError(f"{path} holds a {type(state).__name__}, not a dict of tensors (a state dict) as expected.")
    return state


def _pickle_message(path: Path) -> str:
    return (
        f"{path} holds pickled Python objects; saewidgets refuses to unpickle weights because unpickling can run "
        "arbitrary code. Re-save the tensors as safetensors (safetensors.torch.save_file(state_dict, 'sae.safetensors')) "
        "or a plain state dict, then load that."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise SAEFileError(f"{path} does not exist: the SAE folder is incomplete; save or download it again.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SAEFileError(f"{path} is not valid JSON ({err}); it is probably truncated: save it again.") from err
    if not isinstance(data, dict):
        raise SAEFileError(f"{path} should hold a JSON object, found {type(data).__name__}.")
    return data


def _config(data: dict[str, Any], source: str | os.PathLike) -> SAEConfig:
    try:
        return SAEConfig.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise SAEFileError(f"{source}: the SAE config is invalid ({err}).") from err


def build_sae(cfg: SAEConfig, tensors: dict[str, torch.Tensor], source: str | os.PathLike) -> SAE:
    """An `SAE` of config ``cfg`` holding ``tensors``, after checking every expected tensor is there, shaped right."""
    d, n = cfg.d_in, cfg.n_features
    shapes = {"W_enc": (d, n), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)}
    if cfg.architecture in ("jumprelu", "batchtopk"):
        shapes["threshold"] = (n,)
        if "threshold" in tensors and tensors["threshold"].numel() == 1:
            tensors = {**tensors, "threshold": tensors["threshold"].reshape(()).expand(n)}
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise SAEFileError(
            f"{source} lacks {', '.join(missing)} (found {sorted(tensors)}); a {cfg.architecture} SAE "
            f"needs {', '.join(shapes)}. The file is incomplete or not an SAE of this kind."
        )
    for key, shape in shapes.items():
        if tuple(tensors[key].shape) != shape:
            raise SAEFileError(
                f"{source}: {key} has shape {tuple(tensors[key].shape)} but the config (d_in={d}, n_features={n}) "
                f"needs {shape}. The weights and config do not belong together."
            )
    for key in shapes:
        bad = ~torch.isfinite(tensors[key])
        if bool(bad.any()):
            where = tuple(bad.nonzero()[0].tolist())
            raise SAEFileError(
                f"{source}: {key} holds {int(bad.sum()):,} non-finite values (first {tensors[key][where].item()} at "
                f"{list(where)}). The weights are corrupt or training diverged: use an earlier checkpoint or train again."
            )
        finite = torch.isfinite(tensors[key])
        if not bool(finite.all()):
            where = tuple(int(i) for i in (~finite).nonzero()[0])
            raise SAEFileError(
                f"{source}: {key} holds a non-finite value ({float(tensors[key][where])} at index {where}); the "
                "training that produced it diverged. Retrain (with a lower learning rate) or use another SAE."
            )
    sae = SAE(cfg)
    with torch.no_grad():
        for key in shapes:
            getattr(sae, key).copy_(tensors[key].to(torch.float32))
    return sae
