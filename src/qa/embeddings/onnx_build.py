"""Exporting a sentence-transformers folder to ONNX, once, into the model cache (needs torch and onnx).

The BERT encoder as a few graphs, each a run of layers (:func:`segments`: layers 0-5 with the
embeddings in ``model.onnx``, 6-7 in ``layers-6-8.onnx``, 8-11 with mean pooling and L2
normalisation in ``layers-8-12.onnx``), run one after the other by :class:`qa.embeddings.onnx.Stack`;
the models fine-tuned from e5 (the reader, the span model) are built by :func:`export_layers` from
the layer where their own weights start and run the layers below in the same sessions. Dynamic
batch and sequence axes, ONNX Runtime's BERT fusions (attention, embedding/skip layer norms, GELU),
and for ``onnx-int8`` dynamic int8 quantisation. The vectors are bit-identical to the single graph
of build format 2. Built under a file lock into a staged folder and
swapped in, so concurrent processes build it once. :mod:`qa.embeddings.onnx` runs the result.

The weights are saved beside the graph (``model.onnx.data``, ONNX external data), which ONNX
Runtime memory-maps instead of parsing and copying: a session opens in ~0.2 s instead of ~3 s,
and a query process holds only the pages it touches (the embedding rows of the tokens it sees,
not the 250,037-row matrix: ~140 MB resident instead of ~540 MB, peak ~870 MB at load), shared
with every other process that maps the same file. The vectors are bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa.errors import ModelError
from qa.files import file_lock, staged_folder
from qa.imports import import_torch

logger = logging.getLogger(__name__)

ONNX_BACKENDS = ("onnx", "onnx-int8")
BUILD_FORMAT = 3  # bump whenever the export, the fusions, the quantisation or the file layout change (3: layer segments)
MARKER = "qa_onnx.json"
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
"""The weights, beside the graph (ONNX external data): memory-mapped by ONNX Runtime."""
SPLITS = (6, 8)
"""Where the encoder's layer stack is cut into separate graphs (:func:`segments`). The models fine-tuned from e5
start there — the reader's trained layers at 6, the span model's at 8 — so they run e5's lower layers in the
embedder's own sessions (:class:`qa.embeddings.onnx.Stack`) and hold only their own layers: ONNX Runtime keeps a
pre-packed copy of every matrix per session, which no two sessions share."""


def segments(num_layers: int) -> list[tuple[int, int]]:
    """The ``(first, end)`` layer ranges of the stack's graphs: ``[(0, 6), (6, 8), (8, 12)]`` for 12 layers."""
    cuts = [0, *(s for s in SPLITS if 0 < s < num_layers), num_layers]
    return list(zip(cuts, cuts[1:], strict=False))


def segment_file(first: int, end: int) -> str:
    """The graph of layers ``first``..``end - 1``: :data:`MODEL_FILE` for the first (it holds the embeddings)."""
    return MODEL_FILE if first == 0 else f"layers-{first}-{end}.onnx"


def start_layer(weights: Any, num_layers: int) -> int:
    """Where a model fine-tuned from the encoder must start its own graph: the highest split at or below the
    lowest layer its ``weights`` (tensor names) change (0 if they change the embeddings or name no layer)."""
    import re

    changed = [int(m.group(1)) for name in weights if (m := re.search(r"encoder\.layer\.(\d+)\.", name))]
    if not changed or any("embeddings." in name for name in weights):
        return 0
    lowest = min(changed)
    return max((s for s in (0, *SPLITS) if s <= lowest and s < num_layers), default=0)


def built_segments(path: Path) -> list[tuple[int, int, Path]]:
    """The graphs of the stack whose first graph is ``path`` (:func:`build_onnx_model`'s result), in order:
    ``(first layer, end layer, file)``."""
    marker = json.loads((path.parent / MARKER).read_text())
    return [(int(a), int(b), path.parent / segment_file(int(a), int(b))) for a, b in marker["segments"]]


def input_name(first: int) -> str:
    """The input of a graph of :func:`export_layers` that starts at layer ``first``: token ids at the embeddings,
    else the hidden states of the layer below."""
    return "input_ids" if first == 0 else "hidden_in"


def export_layers(
    bert: Any, first: int, end: int, out: Path, tail: Callable[[Any, Any], Any] | None, outputs: list[str], head: Any = None
) -> None:
    """Layers ``first``..``end - 1`` of ``bert`` (a transformers BERT/XLM-R model, eager attention) as one ONNX
    graph: from ``input_ids`` (with the embeddings) when ``first`` is 0, else from ``hidden_in`` (the previous
    layer's output); plus ``attention_mask``. ``tail(hidden, mask)`` makes the ``outputs`` (None: the hidden
    states, output ``hidden``); ``head``: a module ``tail`` uses, whose weights the graph must hold. The mask is
    built as the whole model builds it, so ONNX Runtime fuses the same attention."""
    torch: Any = import_torch()

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert, self.head = bert, head

        def forward(self, x: Any, attention_mask: Any) -> Any:
            hidden = self.bert.embeddings(input_ids=x) if first == 0 else x
            extended, _ = self.bert._create_attention_masks(
                attention_mask=attention_mask,
                encoder_attention_mask=None,
                embedding_output=hidden,
                encoder_hidden_states=None,
                cache=None,
            )
            for layer in self.bert.encoder.layer[first:end]:
                hidden = layer(hidden, attention_mask=extended)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            return hidden if tail is None else tail(hidden, attention_mask)

    width = int(bert.config.hidden_size)
    x = torch.tensor([[0, 100, 200, 300, 2], [0, 5, 6, 2, 1]]) if first == 0 else torch.randn(2, 5, width)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    name = input_name(first)
    axes = {n: {0: "batch", 1: "sequence"} for n in (name, "attention_mask", *outputs)}
    if "sentence_embedding" in axes:
        axes["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter warnings
        torch.onnx.export(
            Layers().eval(),
            (x, mask),
            str(out),
            input_names=[name, "attention_mask"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def mean_pooled(normalised: bool) -> Callable[[Any, Any], Any]:
    """The ``tail`` of :func:`export_layers` that mean-pools the tokens (and L2-normalises)."""
    torch: Any = import_torch()

    def pool(hidden: Any, attention_mask: Any) -> Any:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1) if normalised else mean

    return pool


def onnx_model_id(model_id: str, backend: str) -> str:
    """The id an index records: fp32 ONNX gives sentence-transformers' vectors, int8 does not."""
    return f"{model_id}@{backend}" if backend == "onnx-int8" else model_id


def onnx_folder_for(model_folder: Path, cache_dir: Path, backend: str) -> Path:
    """Where the ONNX build of ``model_folder`` lives: ``<cache>/<name>.<backend>``."""
    model_folder = Path(model_folder).resolve()
    cache_dir = Path(cache_dir).expanduser().resolve()
    name = model_folder.name
    if model_folder.parent != cache_dir:  # a folder elsewhere: keep builds of same-named folders apart
        name += "-" + hashlib.sha256(str(model_folder).encode()).hexdigest()[:8]
    return cache_dir / f"{name}.{backend}"


def _source_stamp(model_folder: Path) -> dict[str, Any]:
    """What the build depends on: a rebuilt model folder makes the ONNX file stale."""
    stamp: dict[str, Any] = {"source": str(Path(model_folder).resolve())}
    for name in ("model.safetensors", "pytorch_model.bin", "qa_model.json", "config.json"):
        path = Path(model_folder) / name
        if path.is_file():
            st = path.stat()
            stamp[name] = [st.st_size, int(st.st_mtime)]
    return stamp


def is_built(folder: Path, model_folder: Path, backend: str) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    parts = marker.get("segments") or []
    return (
        bool(parts)
        and all((folder / segment_file(a, b)).is_file() and (folder / (segment_file(a, b) + ".data")).is_file() for a, b in parts)
        and marker.get("build_format") == BUILD_FORMAT
        and marker.get("backend") == backend
        and marker.get("stamp") == _source_stamp(model_folder)
    )


def _check_supported(model_folder: Path) -> dict[str, Any]:
    """The encoder's config, if the folder is a mean-pooled, normalised BERT-like model."""
    try:
        config = json.loads((model_folder / "config.json").read_text())
        modules = json.loads((model_folder / "modules.json").read_text())
        pooling_path = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        pooling = json.loads((model_folder / pooling_path / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError):
        pooling, modules, config = {}, [], {}
    normalised = any(m.get("type", "").endswith("Normalize") for m in modules)
    if pooling.get("pooling_mode") != "mean" or not normalised or config.get("model_type") not in ("bert", "xlm-roberta"):
        raise ModelError(
            f"the ONNX backends support mean-pooled, normalised BERT/XLM-R sentence-transformers models; "
            f"{model_folder} is not one: set QA_EMBEDDING_BACKEND=torch"
        )
    return config


def _export(model_folder: Path, out: Path) -> list[tuple[int, int]]:
    """The encoder as :func:`segments` graphs in the folder ``out`` (fp32, raw: ``<segment_file>.raw``), mean
    pooling and L2 normalisation in the last; returns the segments."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)

        torch: Any = import_torch()
        import transformers
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelError(
            f"building the ONNX model needs {exc.name}: pip install onnx, or set QA_EMBEDDING_BACKEND=torch"
        ) from None

    transformers.utils.logging.disable_progress_bar()  # our own progress says "exporting"
    # eager attention exports as plain MatMul/Softmax, which ONNX Runtime fuses into Attention
    bert = AutoModel.from_pretrained(str(model_folder), dtype=torch.float32, attn_implementation="eager").eval()
    parts = segments(int(bert.config.num_hidden_layers))
    for first, end in parts:
        last = end == parts[-1][1]
        export_layers(
            bert,
            first,
            end,
            out / (segment_file(first, end) + ".raw"),
            mean_pooled(True) if last else None,
            ["sentence_embedding" if last else "hidden"],
        )
    return parts


def optimise_bert(src: Path, out: Path, config: dict[str, Any]) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    ort_logger = logging.getLogger("onnxruntime.transformers")  # it logs every fusion at INFO
    level = ort_logger.level
    ort_logger.setLevel(logging.WARNING)
    try:
        model = optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(config["num_attention_heads"]),
            hidden_size=int(config["hidden_size"]),
            opt_level=0,  # the portable fusions only; the session applies the rest on load
        )
    finally:
        ort_logger.setLevel(level)
    model.save_model_to_file(str(out))


def _quantise(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    # ORT's BERT optimizer already did the "pre-processing" this flag asks for (else a root-logger warning)
    onnx.helper.set_model_props(model, {"onnx.quant.pre_process": "onnxruntime.quant"})
    # uint8 weights per channel: cosine 0.997 to fp32 (0.984 per tensor) at the same speed; u8 x u8
    # also avoids the u8 x s8 saturation of AVX2 machines without VNNI
    quantize_dynamic(
        model,
        str(out),
        weight_type=QuantType.QUInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def externalise(src: Path, out: Path) -> None:
    """``src`` saved as ``out`` (the graph) + ``<out>.data`` beside it (every weight over 1 KB; :data:`DATA_FILE`
    for :data:`MODEL_FILE`)."""
    import onnx

    model = onnx.load(str(src))
    data = out.name + ".data"
    onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
    (out.parent / data).chmod(0o644)  # onnx writes it 0600


def build_onnx_model(model_folder: Path, cache_dir: Path, backend: str, progress: Any = None) -> Path:
    """The ONNX file for ``model_folder`` and ``backend``, built once (atomic, safe across processes)."""
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"backend must be one of {ONNX_BACKENDS}, not {backend!r}")
    model_folder = Path(model_folder)
    folder = onnx_folder_for(model_folder, cache_dir, backend)
    if is_built(folder, model_folder, backend):
        return folder / MODEL_FILE
    config = _check_supported(model_folder)
    report = progress or (lambda msg: logger.info("%s", msg))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if is_built(folder, model_folder, backend):  # another process built it while we waited
            return folder / MODEL_FILE
        with staged_folder(folder) as tmp:
            report(f"building ONNX model ({backend}) from {model_folder}: exporting")
            parts = _export(model_folder, tmp)
            report(f"building ONNX model ({backend}): fusing attention and layer norms")
            for first, end in parts:
                name = segment_file(first, end)
                fused = tmp / f"{name}.fused"
                optimise_bert(tmp / f"{name}.raw", fused, config)
                (tmp / f"{name}.raw").unlink()
                if backend == "onnx-int8":
                    _quantise(fused, tmp / f"{name}.quantised")
                    fused.unlink()
                    fused = tmp / f"{name}.quantised"
                externalise(fused, tmp / name)
                fused.unlink()
            marker = {
                "build_format": BUILD_FORMAT,
                "backend": backend,
                "stamp": _source_stamp(model_folder),
                "segments": [list(p) for p in parts],
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2))
            report(f"saving ONNX model to {folder}")
    logger.info("built %s", folder / MODEL_FILE)
    return folder / MODEL_FILE


# -- fine-tuned e5 models (the reader, the span model): the same build, once per weights file ----------------------
def fine_tuned_stamp(weights_sha256: str, model_folder: Path, build_format: int) -> dict[str, Any]:
    """What a fine-tuned model's ONNX build depends on: its weights, the base e5 folder (path, size, mtime), the
    build format."""
    base = Path(model_folder) / "model.safetensors"
    st = base.stat() if base.is_file() else None
    return {
        "weights_sha256": weights_sha256,
        "base": str(Path(model_folder).resolve()),
        "base_file": [st.st_size, int(st.st_mtime)] if st else None,
        "build_format": build_format,
    }


def build_fine_tuned(
    folder: Path,
    marker: str,
    stamp: dict[str, Any],
    model_folder: Path,
    export: Callable[[Path], None],
    what: str,
    progress: Any = None,
) -> Path:
    """``folder/model.onnx`` for a model whose weights sit on top of the e5 folder: ``export(path)`` writes the raw
    ONNX graph (torch), then it is fused (:func:`optimise_bert`) and saved with its weights beside it
    (:func:`externalise`, memory-mapped); once, atomically, under a file lock; rebuilt when ``stamp`` (written to
    ``marker``) changes."""

    def built() -> bool:
        try:
            return (
                (folder / MODEL_FILE).is_file()
                and (folder / DATA_FILE).is_file()
                and json.loads((folder / marker).read_text()) == stamp
            )
        except (OSError, ValueError):
            return False

    if built():
        return folder / MODEL_FILE
    report = progress or (lambda msg: logger.info("%s", msg))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if built():
            return folder / MODEL_FILE
        with staged_folder(folder) as tmp:
            report(f"building the {what} from {model_folder}: exporting")
            export(tmp / "exported.onnx")
            config = json.loads((Path(model_folder) / "config.json").read_text())
            optimise_bert(tmp / "exported.onnx", tmp / "fused.onnx", config)
            (tmp / "exported.onnx").unlink()
            externalise(tmp / "fused.onnx", tmp / MODEL_FILE)
            (tmp / "fused.onnx").unlink()
            (tmp / marker).write_text(json.dumps(stamp, indent=2))
    return folder / MODEL_FILE
