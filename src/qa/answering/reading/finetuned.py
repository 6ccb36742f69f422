"""One loader for the models fine-tuned from multilingual-e5-small: the reader and the span model.

Each ships in the artifact folder (:data:`DEFAULT_ARTIFACT`, this package's ``models``) as a safetensors file of
what differs from e5-small and a JSON manifest that records its sha256 (:class:`FineTuned` says which files, which
format). On first use the manifest is read and its weights checked (:meth:`FineTuned.load_manifest`), the weights are
put on top of the rebuilt e5 folder and the layers they change, with the model's head, are exported once to ONNX in
the model cache (:meth:`FineTuned.build`: ``<kind>-<sha12>.onnx``, a marker file stamped with :attr:`FineTuned.build_format`;
the export needs torch); e5's own layers below run in the embedder's sessions (:func:`below`, one copy of each e5
matrix per process). :class:`FineTunedModel` opens all of that once, thread-safe; running needs only ``onnxruntime``,
``tokenizers``, ``safetensors`` and numpy (no torch import).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from qa.errors import ModelError

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "models"
"""The shipped models: ``qa/answering/reading/models``, inside the package (a wheel carries them)."""

_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """The file's sha256, computed once per process for a given (path, size, modification time): loading the reader
    checks its weights against the manifest twice (the build's stamp, then the load), 21 MB each time."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


Head = Callable[[Any, dict[str, Any]], tuple[Any, Callable[[Any, Any], Any], list[str]]]
"""``head(bert, manifest)``: the model's head (a torch module), the ``tail(hidden, mask)`` of its graph (what
:func:`qa.embeddings.onnx_build.export_layers` puts on top of the last layer) and the names of its outputs."""
Tensors = Callable[[Path, dict[str, Any]], dict[str, Any]]
"""``tensors(artifact, manifest)``: the artifact's tensors as float torch tensors, named ``bert.<…>`` and ``head.<…>``."""


@dataclass(frozen=True)
class FineTuned:
    """How one fine-tuned e5 model is stored in the artifact folder and built in the model cache."""

    kind: str
    """``reader`` or ``span``: the cache folder's prefix and the messages' name."""
    manifest_file: str
    weights_file: str
    """The weights' file name when the manifest names none."""
    artifact_format: int
    """The manifest's ``format`` this qa reads."""
    build_format: int
    """Bumped whenever the export changes (a build stamped with another is rebuilt)."""
    marker: str
    """The build's marker file in its cache folder (the stamp)."""
    command: str
    """What makes the artifact (``qa train-reader``), named by the errors."""
    missing: str
    """What an artifact folder without the manifest lacks, in the error (« reader artifact »)."""
    head: Head
    tensors: Tensors

    # -- the artifact ------------------------------------------------------------------------------------------------
    def weights(self, artifact: Path, manifest: dict[str, Any]) -> Path:
        """The weights file the manifest describes."""
        return Path(artifact) / manifest.get("weights", self.weights_file)

    def load_manifest(self, artifact: Path = DEFAULT_ARTIFACT) -> dict[str, Any]:
        """The artifact's manifest, after checking that its weights file is the one it describes."""
        artifact = Path(artifact)
        path = artifact / self.manifest_file
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"no {self.missing} in {artifact} ({exc}): run `{self.command}` or set QA_READER=off") from None
        if manifest.get("format") != self.artifact_format:
            raise ModelError(
                f"{path} has format {manifest.get('format')!r}, this qa reads {self.artifact_format}: run `{self.command}`"
            )
        weights = self.weights(artifact, manifest)
        if not weights.is_file():
            raise ModelError(f"the {self.kind} weights {weights} are missing: run `{self.command}` or set QA_READER=off")
        actual = sha256_file(weights)
        if actual != manifest.get("weights_sha256"):
            raise ModelError(
                f"{weights} does not match its manifest {path} (sha256 {actual[:12]}…): "
                f"retrain with `{self.command}` or restore it"
            )
        return manifest

    # -- the ONNX build (torch, once) --------------------------------------------------------------------------------
    def folder_for(self, manifest: dict[str, Any], cache_dir: Path) -> Path:
        """The build's folder in the model cache."""
        return Path(cache_dir).expanduser().resolve() / f"{self.kind}-{manifest['weights_sha256'][:12]}.onnx"

    def build(self, artifact: Path, model_folder: Path, cache_dir: Path, progress: Any = None) -> Path:
        """The model's ONNX file: the e5 folder with the artifact's weights on top, exported once (atomic),
        optimised, its weights as ONNX external data beside the graph."""
        manifest = self.load_manifest(artifact)
        from qa.embeddings.onnx_build import build_fine_tuned, fine_tuned_stamp

        return build_fine_tuned(
            self.folder_for(manifest, cache_dir),
            self.marker,
            fine_tuned_stamp(manifest["weights_sha256"], model_folder, self.build_format),
            Path(model_folder),
            lambda out: self._export(Path(artifact), manifest, Path(model_folder), out),
            f"{self.kind} model ({artifact})",
            progress,
        )

    def _export(self, artifact: Path, manifest: dict[str, Any], model_folder: Path, out: Path) -> None:
        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
            import torch
            import transformers
            from transformers import AutoModel
        except ImportError as exc:
            raise ModelError(
                f"building the {self.kind} model needs {exc.name}: pip install torch onnx, or set QA_READER=off"
            ) from None
        from qa.embeddings.onnx_build import export_layers

        transformers.utils.logging.disable_progress_bar()  # the build reports its own progress ("exporting")
        bert = AutoModel.from_pretrained(str(model_folder), dtype=torch.float32, attn_implementation="eager").eval()
        head, tail, outputs = self.head(bert, manifest)
        self.apply_weights(bert, head, self.tensors(artifact, manifest))
        layers = int(bert.config.num_hidden_layers)
        export_layers(bert, first_layer(self.weights(artifact, manifest), layers), layers, out, tail, outputs, head)

    def apply_weights(self, bert: Any, head: Any, weights: dict[str, Any]) -> None:
        """Put the artifact's tensors (``bert.<name>`` and ``head.<name>``, torch) on the model, in its dtype."""
        params = {f"bert.{k}": v for k, v in bert.state_dict().items()} | {f"head.{k}": v for k, v in head.state_dict().items()}
        unknown = sorted(set(weights) - set(params))
        if unknown:
            raise ModelError(f"the {self.kind} weights hold tensors the e5 model lacks: {unknown[:3]}")
        for name, tensor in weights.items():
            target = params[name]
            if tuple(target.shape) != tuple(tensor.shape):
                shapes = f"{tuple(tensor.shape)}, the model {tuple(target.shape)}"
                raise ModelError(f"the {self.kind} tensor {name} has shape {shapes}")
            target.copy_(tensor.to(target.dtype))


def first_layer(weights: Path, layers: int) -> int:
    """The first layer of the own graph of a model fine-tuned from e5 whose tensors are the safetensors file
    ``weights`` (:func:`qa.embeddings.onnx_build.start_layer`): the layers below are e5's own, run by the
    embedder's sessions."""
    from safetensors import safe_open

    from qa.embeddings.onnx_build import start_layer

    with safe_open(str(weights), framework="numpy") as fh:
        return start_layer(list(fh.keys()), layers)


def below(weights: Path, folder: Path, cache_dir: Path, progress: Any = None) -> tuple[int, Any]:
    """For a model fine-tuned from the e5 folder ``folder`` (its tensors: the safetensors file ``weights``):
    ``(first layer, stack)``: the model's graph starts at that layer of e5 and the process's shared e5 stack
    (:func:`qa.embeddings.onnx.shared_stack`, the embedder's fp32 build) runs the layers below it; ``(0, None)``
    when the graph starts at the embeddings."""
    from qa.embeddings.onnx import build_onnx_model, shared_stack

    config = json.loads((Path(folder) / "config.json").read_text())
    first = first_layer(weights, int(config["num_hidden_layers"]))
    if first == 0:
        return 0, None
    return first, shared_stack(build_onnx_model(folder, cache_dir, "onnx", progress), base=folder)


# -- running (ONNX Runtime) ------------------------------------------------------------------------------------------
class FineTunedModel:
    """A fine-tuned e5 model (:attr:`spec`) run by ONNX Runtime: loaded (and built, once) on first use. Thread-safe."""

    spec: FineTuned

    def __init__(
        self, cache_dir: Path, *, artifact: Path | None = None, model: str = "multilingual-e5-small", progress: Any = None
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.artifact = Path(artifact) if artifact else DEFAULT_ARTIFACT
        self.model = model
        self.progress = progress
        self.manifest: dict[str, Any] = {}
        self._session: Any = None
        self._below: tuple[int, Any] = (0, None)
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> Self:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._load()
        return self

    def _load(self) -> None:
        from qa.embeddings import resolve_model_folder
        from qa.embeddings.onnx import open_session

        folder = resolve_model_folder(self.model, self.cache_dir, self.progress)
        path = self.spec.build(self.artifact, folder, self.cache_dir, self.progress)
        session = open_session(path, base=folder)
        self.manifest = self.spec.load_manifest(self.artifact)
        self._below = below(self.spec.weights(self.artifact, self.manifest), folder, self.cache_dir, self.progress)
        self._opened(folder)
        self._session = session

    def _opened(self, folder: Path) -> None:
        """What the model needs beside its session, read once it is built (its tokenizer, ...)."""

    def _outputs(self, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for the token ids, e5's lower layers run by the shared stack."""
        from qa.embeddings.onnx import run_above

        return run_above(self._session, *self._below, ids, mask)

    def _outputs_bucketed(self, ids: np.ndarray, mask: np.ndarray, *, per_token: bool, fill: float = 0.0) -> list[np.ndarray]:
        """:meth:`_outputs` for a batch padded to its longest row, run as :func:`buckets` of rows of similar length
        (each cut to its own longest: the CPU goes to tokens, not padding; the rows' outputs are the same).
        ``per_token``: the outputs have one value per token (padded back with ``fill``), else one row each."""
        lengths = [int(n) for n in mask.sum(axis=1)]
        groups = buckets(lengths)
        if len(groups) == 1:
            return self._outputs(ids[:, : max(lengths)], mask[:, : max(lengths)])
        out: list[np.ndarray] = []
        for rows in groups:
            width = max(lengths[i] for i in rows)
            got = self._outputs(ids[rows, :width], mask[rows, :width])
            if not out:
                out = [
                    np.full((len(lengths), ids.shape[1], *g.shape[2:]), fill, dtype=g.dtype)
                    if per_token
                    else np.zeros((len(lengths), *g.shape[1:]), dtype=g.dtype)
                    for g in got
                ]
            for whole, part in zip(out, got, strict=True):
                if per_token:
                    whole[rows, :width] = part
                else:
                    whole[rows] = part
        return out


SLACK = 1.15
"""A bucket's padded tokens may exceed its real ones by this factor (:func:`buckets`)."""


def buckets(lengths: list[int], slack: float = SLACK) -> list[list[int]]:
    """The rows (indices into ``lengths``, the tokens of each) grouped longest first so that each group padded to
    its longest costs at most ``slack`` times its real tokens: five candidate sentences of 30 to 120 tokens padded
    to 120 spend a third of the model's time on padding (measured: the span model 147 ms per question as one batch,
    127 ms one sentence at a time)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current and lengths[current[0]] * (len(current) + 1) > slack * (real + lengths[i]):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        groups.append(current)
    return groups
