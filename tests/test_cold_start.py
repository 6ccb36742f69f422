"""Start in seconds, stay small: what a cold process loads, and the ONNX file's memory-mapped weights.

Times are measured by ``benchmarks/cold_start.py`` (ratios before/after in one run), never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qa.embeddings import onnx_build
from qa.embeddings.onnx_build import DATA_FILE, MARKER, MODEL_FILE, build_onnx_model, onnx_folder_for

from helpers import MODEL_CACHE, ROOT, SEED

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
HEAVY = ("torch", "transformers", "sentence_transformers", "chromadb", "langchain_core", "spacy", "fastapi", "streamlit")

# run in a cold process: `qa ask`, counting the tokenizers it loads and the heavy libraries it imports
COLD_ASK = """
import json, sys, tokenizers
loads = []
from_file = tokenizers.Tokenizer.from_file
tokenizers.Tokenizer.from_file = staticmethod(lambda path: loads.append(path) or from_file(path))
from qa.cli import main
code = main(["ask", sys.argv[1]])
heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
print(json.dumps({"code": code, "imported": heavy, "tokenizers": len(loads)}))
"""


def _env(tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "QA_MODEL_CACHE": str(MODEL_CACHE),
        "QA_INDEX_DIR": str(tmp_path / "index"),
        "HF_HUB_OFFLINE": "1",
    }


def test_import_qa_loads_no_heavy_library(tmp_path):
    code = f"import json, sys, qa, qa.cli, qa.kb; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_the_command_line_imports_qa_training_only_for_its_commands(tmp_path):
    code = (
        "import sys; from qa.cli import build_parser; "
        "build_parser(['ask', 'x']).parse_args(['ask', 'x']); assert 'qa.training' not in sys.modules; "
        "args = build_parser(['train-span', '--layers', '4']).parse_args(['train-span', '--layers', '4']); "
        "assert args.layers == 4 and 'qa.training.span' in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    helped = subprocess.run(
        [sys.executable, "-m", "qa.cli", "--help"], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert all(name in helped.stdout for name in ("train-reader", "fit-combiner", "train-span", "ask"))


def test_preload_loads_the_model_on_a_thread_and_a_question_waits_for_it(tmp_path, fake_embedder):
    import threading

    from qa import KnowledgeBase

    from helpers import SEED

    loaded, release = [], threading.Event()

    class SlowToLoad(type(fake_embedder)):  # type: ignore[misc]
        def load(self):
            release.wait(30)
            loaded.append(threading.current_thread().name)

    embedder = SlowToLoad()
    with KnowledgeBase.open(tmp_path / "index", embedder=embedder) as kb:
        kb.ingest([SEED])
    with KnowledgeBase.open(tmp_path / "index", embedder=embedder, preload="ask") as kb:  # returns at once
        assert loaded == []
        release.set()
        kb.warm()  # preloads once more: nothing started twice
        assert "novembre 1994" in kb.ask(QUESTION).text
    assert loaded[0] == "qa-preload-model" and loaded.count("qa-preload-model") == 1


def _tiny_model_folder(tmp_path):
    """What ``_check_supported`` accepts: a mean-pooled, normalised BERT folder (no weights needed here)."""
    folder = tmp_path / "tiny-model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "num_attention_heads": 1, "hidden_size": 4}))
    modules = [
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def _tiny_onnx(path):
    """A graph with one 300x4 weight (over the 1 KB external-data threshold): ids -> gathered rows."""
    import onnx
    from onnx import TensorProto, helper

    weight = np.arange(1200, dtype=np.float32).reshape(300, 4) / 7
    graph = helper.make_graph(
        [helper.make_node("Gather", ["weight", "input_ids"], ["out"])],
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4])],
        [onnx.numpy_helper.from_array(weight, "weight")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return weight


def test_a_build_of_an_older_format_is_rebuilt_and_the_current_one_lists_its_segments(tmp_path, monkeypatch):
    """Format 2 held the whole encoder in one graph; format 3 cuts it into layer segments that the reader and the
    span model share: an older build is exported again, not taken as built."""
    model_folder = _tiny_model_folder(tmp_path)
    cache = tmp_path / "cache"
    old = onnx_folder_for(model_folder, cache, "onnx")
    old.mkdir(parents=True)
    _tiny_onnx(old / MODEL_FILE)
    (old / DATA_FILE).write_bytes(b"weights")
    marker = {"build_format": 2, "backend": "onnx", "stamp": onnx_build._source_stamp(model_folder)}
    (old / MARKER).write_text(json.dumps(marker))
    assert not onnx_build.is_built(old, model_folder, "onnx")
    exported = []

    def export(folder, out):
        exported.append(folder)
        raise RuntimeError("exporting")

    monkeypatch.setattr(onnx_build, "_export", export)
    with pytest.raises(RuntimeError, match="exporting"):
        build_onnx_model(model_folder, cache, "onnx")
    assert exported == [model_folder]
    marker.update(build_format=onnx_build.BUILD_FORMAT, segments=[[0, 2], [2, 4]])
    (old / MARKER).write_text(json.dumps(marker))
    assert not onnx_build.is_built(old, model_folder, "onnx")  # layers-2-4.onnx is missing
    (old / "layers-2-4.onnx").write_bytes(b"graph")
    (old / "layers-2-4.onnx.data").write_bytes(b"weights")
    assert onnx_build.is_built(old, model_folder, "onnx")
    assert [(a, b, f.name) for a, b, f in onnx_build.built_segments(old / MODEL_FILE)] == [
        (0, 2, "model.onnx"),
        (2, 4, "layers-2-4.onnx"),
    ]


def test_segments_cut_the_stack_where_the_fine_tuned_models_start():
    assert onnx_build.segments(12) == [(0, 6), (6, 8), (8, 12)]
    assert onnx_build.segments(6) == [(0, 6)]
    reader = [f"bert.encoder.layer.{i}.output.dense.weight" for i in range(6, 12)] + ["head.weight"]
    assert onnx_build.start_layer(reader, 12) == 6
    assert onnx_build.start_layer(reader[2:], 12) == 8  # the span model: layers 8-11
    assert onnx_build.start_layer(reader[1:], 12) == 6  # layers 7-11: its graph starts at 6, e5's layer 6 in it
    assert onnx_build.start_layer(reader + ["bert.embeddings.word_embeddings.weight"], 12) == 0
    assert onnx_build.start_layer(["head.weight"], 12) == 0


@pytest.mark.slow
def test_a_cold_qa_ask_answers_without_torch_nor_a_second_tokenizer(tmp_path):
    env = _env(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "qa.cli", "ingest", "-q", str(SEED)], env=env, check=True, capture_output=True, timeout=600
    )
    done = subprocess.run([sys.executable, "-c", COLD_ASK, QUESTION], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    answer, _, report = done.stdout.rstrip().rpartition("\n")
    assert answer.startswith("En novembre 1994.") and "commencé ses travaux à Almaty" in answer
    # no torch on the query path; the counting tokenizer (~290 MB) is an ingest's only
    assert json.loads(report) == {"code": 0, "imported": [], "tokenizers": 1}
    onnx_folder = MODEL_CACHE / "multilingual-e5-small.onnx"
    assert (onnx_folder / DATA_FILE).is_file() and (onnx_folder / MODEL_FILE).stat().st_size < 1_000_000


# What a cold `qa ask` may import beyond the standard library: anything else is a new cost on every cold question
# (see benchmarks/cold_start.py). Internals of these (_cython_*, cython_runtime, _distutils_hack) are not listed.
COLD_ALLOWED = {
    "numpy": "vectors",
    "onnxruntime": "the e5 graphs (and with QA_READER=on the reader's and the span model's)",
    "tokenizers": "the XLM-R tokenizer, once",
    "chromadb_rust_bindings": "Chroma's engine read directly (qa.index.engine), not the chromadb client",
    "Stemmer": "the French stemmer of the BM25 analyser",
    "safetensors": "the reader's head weights (QA_READER=on)",
}
COLD_QA_FORBIDDEN = ("qa.training", "qa.http", "qa.ui", "qa.evaluation", "qa.embeddings.torch")

COLD_MODULES = """
import json, sys
from qa.cli import main
code = main(["ask", sys.argv[1]])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def seed_index(tmp_path_factory):
    """The seed article indexed with the real model, for the cold processes below."""
    index = tmp_path_factory.mktemp("cold") / "index"
    env = {**_env(index.parent), "QA_INDEX_DIR": str(index)}
    subprocess.run(
        [sys.executable, "-m", "qa.cli", "ingest", "-q", str(SEED)], env=env, check=True, capture_output=True, timeout=600
    )
    # the reader's and span model's ONNX graphs are exported from the shipped weights on a machine's first use (with
    # torch): build them here, so that the processes below are cold processes, not a fresh machine's first question
    subprocess.run(
        [sys.executable, "-m", "qa.cli", "ask", QUESTION],
        env={**env, "QA_READER": "on"},
        check=True,
        capture_output=True,
        timeout=600,
    )
    return env


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["off", "on"])
def test_a_cold_qa_ask_imports_only_the_allowed_packages(seed_index, reader):
    env = {**seed_index, "QA_READER": reader}
    done = subprocess.run([sys.executable, "-c", COLD_MODULES, QUESTION], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    answer, _, report = done.stdout.rstrip().rpartition("\n")
    modules = json.loads(report)["modules"]
    assert answer.startswith(("En novembre 1994.", "En décembre 1993."))  # the reader's own answer (issue 21)
    packages = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"qa", "__main__"}
    internals = {p for p in packages if p.startswith("_") or p == "cython_runtime"}
    unexpected = sorted(packages - internals - set(COLD_ALLOWED))
    assert not unexpected, f"a cold `qa ask` now imports {unexpected}: import it where it is used, or allow it here"
    assert "chromadb_rust_bindings" in packages and ("safetensors" in packages) == (reader == "on")
    forbidden = sorted(m for m in modules if m.startswith(COLD_QA_FORBIDDEN))
    assert not forbidden, f"a cold `qa ask` imports {forbidden}"
