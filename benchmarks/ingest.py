"""Ingest speed: `qa` against the pipeline a LangChain tutorial would write, same model, same corpus, same run.

    .venv/bin/python benchmarks/ingest.py [--corpus FILE_OR_DIR] [--limit N] [--rounds R]

The naive pipeline: RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200) +
HuggingFaceEmbeddings on the same model folder (fp32 compute, normalised) + Chroma.add_documents.
Both models are loaded before the clock starts; rounds alternate which pipeline goes first.
The ceiling is SentenceTransformer.encode alone on qa's chunk inputs. Prints Markdown tables and
writes benchmarks/results/ingest.json. Default corpus: PIAF v1.0 paragraphs (../shared/data), else corpus/.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import load_corpus, machine, median, table, write_json


class Timed:
    """Accumulates wall time per stage around wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t

        return timed


def run_qa(articles: list[Any], embedder: Any, workdir: Path, batch_articles: int | None = None) -> dict[str, Any]:
    import qa.index.writer
    from qa import KnowledgeBase

    default_batch = qa.index.writer.BATCH_ARTICLES
    qa.index.writer.BATCH_ARTICLES = batch_articles or default_batch
    stages = Timed()
    original_chunk_text = qa.index.writer.chunk_text
    qa.index.writer.chunk_text = stages.wrap("chunk + count tokens", original_chunk_text)
    try:
        kb = KnowledgeBase.open(workdir / "qa-index", embedder=embedder)
        kb.embedder = type("E", (), {})()  # a proxy that times each call of the real embedder
        for attr in ("model_id", "dimension", "count_tokens", "embed_query"):
            setattr(kb.embedder, attr, getattr(embedder, attr))
        inputs: list[str] = []

        def embed_documents(texts: list[str]) -> Any:
            inputs.extend(texts)
            return embedder.embed_documents(texts)

        kb.embedder.embed_documents = stages.wrap("embed", embed_documents)
        kb.writer.embedder = kb.embedder  # the writer embeds the chunks
        kb.store.upsert = stages.wrap("chroma upsert", kb.store.upsert)
        kb.manifest.put_many = stages.wrap("manifest + lexical", kb.manifest.put_many)
        t = time.perf_counter()
        report = kb.add_articles(articles)
        seconds = time.perf_counter() - t
        kb.close()
    finally:
        qa.index.writer.chunk_text = original_chunk_text
        qa.index.writer.BATCH_ARTICLES = default_batch
    stages.seconds["other"] = seconds - sum(stages.seconds.values())
    return {"seconds": seconds, "chunks": report.chunks_written, "inputs": inputs, "stages": dict(stages.seconds)}


def run_naive(articles: list[Any], hf_embeddings: Any, workdir: Path) -> dict[str, Any]:
    import chromadb
    from chromadb.config import Settings
    from langchain_chroma import Chroma
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    t = time.perf_counter()
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    docs = splitter.create_documents([a.text for a in articles], metadatas=[{"title": a.title, "id": a.id} for a in articles])
    client = chromadb.PersistentClient(str(workdir / "naive-index"), settings=Settings(anonymized_telemetry=False))
    store = Chroma(collection_name="naive", embedding_function=hf_embeddings, client=client)
    store.add_documents(docs)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "chunks": len(docs), "inputs": [d.page_content for d in docs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="SQuAD JSON, folder or file (default: PIAF v1.0 if present, else corpus/)")
    parser.add_argument("--limit", type=int, default=300, help="articles (default 300; 0 = all)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each pipeline, alternating (default 2)")
    parser.add_argument("--old-batches", action="store_true", help="also run qa with its former 32-article batches")
    args = parser.parse_args()

    import torch
    from langchain_huggingface import HuggingFaceEmbeddings
    from transformers import AutoTokenizer

    from qa.config import load_settings
    from qa.embeddings import make_embedder, resolve_model_folder

    articles, _, source = load_corpus(args.corpus, args.limit or None)
    settings = load_settings()
    backend = settings.embedding_backend  # QA_EMBEDDING_BACKEND: qa as configured; the naive pipeline is always torch
    embedder = make_embedder(
        settings.embedding_model, settings.model_cache, batch_size=settings.embed_batch_size, backend=backend
    )
    embedder.load()
    folder = resolve_model_folder(settings.embedding_model, settings.model_cache, None)
    hf = HuggingFaceEmbeddings(
        model_name=str(folder),
        model_kwargs={"device": "cpu", "local_files_only": True, "model_kwargs": {"dtype": torch.float32}},
        encode_kwargs={"normalize_embeddings": True},
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    print(f"{len(articles)} articles from {source}; {args.rounds} rounds; torch threads {torch.get_num_threads()}")
    print(f"qa embeds with {embedder.model_id} (QA_EMBEDDING_BACKEND={backend}); naive: torch fp32")

    names = ["qa", "naive"] + (["qa, 32-article batches"] if args.old_batches else [])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # each pipeline goes first in turn
        for name in order:
            workdir = Path(tempfile.mkdtemp(prefix="qa-bench-ingest-"))
            try:
                if name == "naive":
                    run = run_naive(articles, hf, workdir)
                else:
                    run = run_qa(articles, embedder, workdir, 32 if "32" in name else None)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            runs[name].append(run)
            print(f"round {r + 1}: {name} {run['seconds']:.1f} s, {run['chunks']} chunks")

    # the ceiling: the model alone (qa's backend, one call) on qa's own chunk inputs
    qa_inputs = runs["qa"][0]["inputs"]
    t = time.perf_counter()
    embedder._inner.embed_documents(qa_inputs)  # noqa: SLF001 - unsliced
    ceiling_seconds = time.perf_counter() - t

    def tokens(texts: list[str], prefix: str = "") -> int:
        return sum(len(ids) for ids in tokenizer([prefix + x for x in texts], truncation=True, max_length=512)["input_ids"])

    rows, result = [], {"corpus": source, "articles": len(articles), "rounds": args.rounds, "machine": machine(), "pipelines": {}}
    result["qa_embedding"] = {"backend": backend, "model_id": embedder.model_id}
    qa_tokens = tokens(qa_inputs, "passage: ")
    for name in names:
        seconds = median([run["seconds"] for run in runs[name]])
        chunks = runs[name][0]["chunks"]
        n_tokens = tokens(runs[name][0]["inputs"]) if name == "naive" else qa_tokens
        result["pipelines"][name] = {
            "seconds": round(seconds, 2),
            "all_seconds": [round(run["seconds"], 2) for run in runs[name]],
            "articles_per_s": round(len(articles) / seconds, 2),
            "chunks": chunks,
            "chunks_per_s": round(chunks / seconds, 2),
            "tokens": n_tokens,
            "tokens_per_s": round(n_tokens / seconds, 1),
        }
        p = result["pipelines"][name]
        rows.append([name, p["seconds"], p["articles_per_s"], chunks, p["chunks_per_s"], n_tokens, p["tokens_per_s"]])
    n = len(qa_inputs)
    rows.append([f"embedding alone ({backend})", round(ceiling_seconds, 2), "", n, round(n / ceiling_seconds, 2), qa_tokens,
                 round(qa_tokens / ceiling_seconds, 1)])  # fmt: skip
    result["ceiling_seconds"] = round(ceiling_seconds, 2)
    result["ratio_naive_over_qa"] = round(result["pipelines"]["naive"]["seconds"] / result["pipelines"]["qa"]["seconds"], 2)
    stages = {k: round(median([run["stages"][k] for run in runs["qa"]]), 2) for k in runs["qa"][0]["stages"]}
    result["qa_stages_seconds"] = stages

    print()
    print(table(["pipeline", "seconds", "articles/s", "chunks", "chunks/s", "tokens embedded", "tokens/s"], rows))
    print(f"\nnaive time / qa time = {result['ratio_naive_over_qa']} (median of {args.rounds} rounds each)\n")
    print(table(["qa stage", "seconds"], [[k, v] for k, v in stages.items()]))
    print(f"\nwrote {write_json('ingest.json', result)}")


if __name__ == "__main__":
    main()
