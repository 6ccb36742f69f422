"""The ``qa`` command line: ``qa ingest | search | ask | eval | delete | check | info | serve``.

Errors from :mod:`qa.errors` become one line on stderr and exit code 1 (2 for
usage errors); ``--json`` prints machine-readable output on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qa.errors import ConfigError, QAError

logger = logging.getLogger("qa")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> Any:
    """The settings, with the common options over the environment and ``qa.toml``."""
    from qa.config import load_settings

    return load_settings(
        index_dir=args.index, embedding_model=args.model, chroma_url=args.chroma_url, database_url=args.database_url
    )


def _open_kb(args: argparse.Namespace, preload: str | None = None) -> Any:
    """The knowledge base of the command's settings; ``preload`` (``search``/``ask``): its models load meanwhile."""
    from qa.kb import KnowledgeBase

    settings = _settings(args)
    return KnowledgeBase.open(
        settings=settings,
        progress=lambda msg: _stderr(f"qa: {msg}…"),
        preload=preload,
        on_wait=lambda msg: _stderr(f"qa: {msg}"),
    )


# -- commands ----------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    kb = _open_kb(args)
    paths = args.paths or [str(kb.settings.corpus_dir)]
    if args.dry_run:
        if not args.prune:
            _stderr("qa: error: --dry-run lists what --prune would remove: use both")
            return 2
        gone = kb.prune(paths, dry_run=True)
        for doc_id, path in gone:
            print(f"would prune {doc_id}  ({path})")
        print(f"{len(gone)} articles would be pruned (dry run: nothing changed)")
        return 0
    bar = tqdm(desc="ingest", unit=" inputs", file=sys.stderr, disable=args.quiet, mininterval=0.5)
    last = 0

    def on_progress(report: Any, inputs: int) -> None:
        nonlocal last
        bar.update(inputs - last)
        last = inputs
        rate = report.chunks_written / report.seconds if report.seconds else 0.0
        bar.set_postfix_str(
            f"added={len(report.added)} updated={len(report.updated)} unchanged={len(report.unchanged)} "
            f"skipped={len(report.skipped)} errors={len(report.errors)} chunks={report.chunks_written} ({rate:.1f}/s)"
        )

    try:
        report = kb.ingest(paths, progress=on_progress, prune=args.prune, rebuild=args.rebuild, wait=not args.no_wait)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    elif report.job is not None and args.no_wait:
        print(
            f"enqueued {report.queued} articles as job {report.job}: `qa worker` processes write them (`qa info` shows the queue)"
        )
    else:
        print(report.summary())
        for item in report.skipped:
            print(f"  skipped {item}")
        for item in report.errors:
            print(f"  error   {item}")
        for doc_id in report.pruned:
            print(f"  pruned  {doc_id}")
    return 1 if report.errors else 0


def cmd_worker(args: argparse.Namespace) -> int:
    import signal
    import threading

    kb = _open_kb(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish the batch in hand, then leave
        signal.signal(sig, lambda *_: stop.set())
    started = time.perf_counter()

    def on_batch(stats: Any) -> None:
        if not args.quiet:
            rate = stats.chunks / (time.perf_counter() - started)
            _stderr(f"qa worker: {stats.batches} batches, {stats.articles} articles, {stats.chunks} chunks ({rate:.1f} chunks/s)")

    _stderr(
        f"qa worker: working the ingest queue of {kb.stats()['database_url']}"
        + (" until it is empty" if args.until_empty else "")
    )
    stats = kb.work(stop=stop, until_empty=args.until_empty, on_batch=on_batch)
    seconds = time.perf_counter() - started
    print(
        f"{stats.batches} batches, {stats.articles} articles, {stats.chunks} chunks written in {seconds:.1f}s"
        + (f", {stats.failed_batches} batches failed (retried)" if stats.failed_batches else "")
    )
    return 0


def _repair_bar(args: argparse.Namespace) -> Callable[[int, int], None] | None:
    """A progress bar for the long steps of a repair (none with --json)."""
    if args.json:
        return None
    from tqdm import tqdm

    bar: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="chunk", desc="recording chunk places", file=sys.stderr))
        bar[0].update(done - bar[0].n)
        if done >= total:
            bar[0].close()

    return progress


def cmd_check(args: argparse.Namespace) -> int:
    kb = _open_kb(args)
    report = kb.repair(_repair_bar(args)) if args.repair else kb.check()
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return 0 if report.ok else 1
    for line in report.repaired:
        print(f"repaired: {line}")
    print(report.summary())
    for line in report.problems():
        print(f"  {line}")
    if not report.ok and not args.repair:
        print("run `qa check --repair` to fix these")
    return 0 if report.ok else 1


def cmd_search(args: argparse.Namespace) -> int:
    kb = _open_kb(args, preload="search")
    hits = kb.search(args.question, k=args.k, **_filters(args))
    if args.json:
        print(json.dumps([p.to_dict() for p in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("No passage found (is the index empty? run `qa ingest`).")
    for rank, p in enumerate(hits, 1):
        meta = " · ".join(x for x in (p.date, p.source, p.url) if x)
        print(f"[{rank}] {p.title or p.doc_id}  (score {p.score:.3f}){'  ' + meta if meta else ''}")
        print(textwrap.indent(textwrap.fill(p.text, width=100), "    "))
    return 0


def format_answer(answer: Any) -> str:
    """The answer, then numbered citations (title, date, quote); abstentions list the closest passages."""
    lines = [answer.text]
    if answer.abstained:
        if answer.passages:
            lines.append("\nPassages les plus proches :")
            for rank, p in enumerate(answer.passages[:3], 1):
                lines.append(f"  [{rank}] {p.title or p.doc_id}{' — ' + p.date if p.date else ''}")
        return "\n".join(lines)
    if answer.citations:
        lines.append("")
    for rank, c in enumerate(answer.citations, 1):
        p = c.passage
        meta = " · ".join(x for x in (p.date, p.source, p.url) if x)
        lines.append(f"[{rank}] {p.title or p.doc_id}{' — ' + meta if meta else ''}")
        lines.append(textwrap.indent(textwrap.fill(f"« {c.quote} »", width=100), "    "))
    return "\n".join(lines)


def cmd_ask(args: argparse.Namespace) -> int:
    kb = _open_kb(args, preload="ask" if args.answerer in (None, "extractive") else "search")
    chosen = _filters(args)
    if args.json:
        answer = kb.ask(args.question, k=args.k, answerer=args.answerer, **chosen)
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        return 0
    streamed = False
    for item in kb.ask_stream(args.question, k=args.k, answerer=args.answerer, **chosen):
        if isinstance(item, str):  # an LLM's reply, as it comes
            print(item, end="", flush=True)
            streamed = True
        else:
            text = format_answer(item)
            print(text.partition("\n")[2] if streamed else text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from qa.evaluation import evaluate_squad, format_report, load_squads, plot_recall_curves, split_questions

    if args.format == "news":
        return _eval_news(args)
    articles, questions = load_squads(args.file)
    if args.split != "all":
        from qa.answering.reading.reader import READER

        split = READER.load_manifest()["split"]  # the reader's own split: its dev articles were never trained on
        questions = split_questions(articles, questions, args.split, split["dev_share"], split["seed"])
    questions = questions[: args.limit] if args.limit else questions
    kb, settings, index, report = _eval_index(args, articles)
    modes = [settings.retrieval]
    if args.compare:
        modes += [m for m in ("hybrid", "rerank", "dense", "lexical") if m not in modes]
    stages = ["extractive:lexical", "extractive:reader", "extractive:combined"] if args.stages else [args.answerer]
    result = evaluate_squad(
        kb, questions, k=args.k, modes=modes, answers=not args.no_answers, unanswerable=args.unanswerable, answerer=stages[0]
    )
    if args.stages and not args.no_answers:
        result["stages"] = {stages[0]: _stage_result(result)}
        for stage in stages[1:]:
            staged = evaluate_squad(kb, questions, k=args.k, modes=(), unanswerable=args.unanswerable, answerer=stage)
            result["stages"][stage] = _stage_result(staged)
            result.update({key: staged[key] for key in ("answers", "unanswerable", "thresholds") if key in staged})
            for qtype, figures in staged.get("by_type", {}).items():  # keep the retrieval columns of the first run
                result.setdefault("by_type", {}).setdefault(qtype, {}).update(figures)
    result.update(
        file=", ".join(str(f) for f in args.file),
        split=args.split,
        index=str(index),
        articles=len(articles),
        chunks=kb.stats()["chunks"],
        model=kb.embedder.model_id,
        answerer=stages[-1] or settings.answerer,
        ingest_seconds=round(report.seconds, 1),
        ingest_chunks_per_second=round(report.chunks_written / report.seconds, 1) if report.chunks_written else None,
    )
    markdown = format_report(result)
    if args.report:
        report_path = Path(args.report)
        plot = plot_recall_curves(result, report_path.with_name(report_path.stem + "-recall.png"))
        markdown = format_report(result, plot=plot.name)
        report_path.write_text(markdown, encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else markdown)
    return 0


def _eval_index(args: argparse.Namespace, articles: Sequence[Any]) -> tuple[Any, Any, str, Any]:
    """``qa eval``'s knowledge base holding ``articles``: never the user's own index, a fresh one unless ``--index``
    names one; ``(kb, settings, index folder, ingest report)``."""
    import tempfile

    from tqdm import tqdm

    from qa.config import load_settings
    from qa.kb import KnowledgeBase

    index = args.index or tempfile.mkdtemp(prefix="qa-eval-")
    # an evaluation indexes its own articles: in a folder of its own, never in the shared database of QA_DATABASE_URL;
    # `--database-url` (with `--chroma-url`) measures the PostgreSQL backend, in a database that must be empty
    settings = load_settings(
        index_dir=index, embedding_model=args.model, chroma_url=args.chroma_url, database_url=args.database_url or ""
    )
    kb = KnowledgeBase.open(settings=settings, progress=lambda msg: _stderr(f"qa: {msg}…"))
    if settings.database_url and not kb.manifest.is_empty():
        raise ConfigError("qa eval indexes its own articles: give --database-url an empty database (createdb a new one)")
    report = kb.add_articles(tqdm(articles, desc="ingest", unit=" articles", file=sys.stderr, mininterval=1))
    return kb, settings, str(index), report


def _eval_news(args: argparse.Namespace) -> int:
    """``qa eval news QUESTIONS.jsonl``: the corpus is the first ``--corpus-size`` articles of ``--articles`` (and
    every article a question names)."""
    from qa.evaluation import evaluate_news, format_news_report, load_news_articles, load_news_questions

    questions = [q for f in args.file for q in load_news_questions(f)]
    if args.split != "all":
        questions = [q for q in questions if q.split == args.split]
    questions = questions[: args.limit] if args.limit else questions
    articles = load_news_articles(args.articles, args.corpus_size, ids={q.doc_id for q in questions})
    missing = sorted({q.doc_id for q in questions} - {a.id for a in articles})
    if missing:
        _stderr(
            f"qa: error: {args.articles}: no article {missing[0]} ({len(missing)} missing): "
            "give --articles the file the questions were written on"
        )
        return 1
    kb, settings, index, _ = _eval_index(args, articles)
    result = evaluate_news(kb, questions, k=args.k, answerer=args.answerer)
    result.update(
        file=", ".join(str(f) for f in args.file),
        split=args.split,
        index=str(index),
        articles=len(articles),
        chunks=kb.stats()["chunks"],
        model=kb.embedder.model_id,
        answerer=args.answerer
        or (
            "extractive (reading answerer)"
            if settings.answerer == "extractive" and settings.reader == "on"
            else settings.answerer
        ),
    )
    markdown = format_news_report(result)
    if args.report:
        Path(args.report).write_text(markdown, encoding="utf-8")
    if not args.per_question:
        result.pop("per_question")
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else markdown)
    return 0


def _stage_result(result: dict[str, Any]) -> dict[str, Any]:
    """One answerer's figures for the stage-by-stage table."""
    out = dict(result.get("answers", {}))
    if "unanswerable" in result:
        out["unanswerable_abstention_rate"] = result["unanswerable"]["abstention_rate"]
    return out


def cmd_delete(args: argparse.Namespace) -> int:
    kb = _open_kb(args)
    for doc_id in args.ids:
        kb.delete(doc_id)
        print(f"deleted {doc_id}")
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    from qa.index.postgres import init_db
    from qa.index.postgres.database import redact
    from qa.index.postgres.manifest import SCHEMA_VERSION

    url = _settings(args).database_url
    if not url:
        _stderr("qa: error: init-db needs a PostgreSQL database: set QA_DATABASE_URL or pass --database-url")
        return 2
    done = init_db(url)
    print(f"schema {done} at {redact(url)} (version {SCHEMA_VERSION})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    kb = _open_kb(args)
    stats = kb.stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=2))
    else:
        for key, value in stats.items():
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            elif isinstance(value, dict):  # the shared ingest queue
                value = " ".join(f"{k}={', '.join(v) or '-' if isinstance(v, list) else v}" for k, v in value.items())
            print(f"{key:>14}: {value if value is not None else '-'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from qa.http.app import create_app

    settings = _settings(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_token:
        logger.warning("serving on %s without QA_API_TOKEN: anyone who reaches the port can read and change the index", args.host)
    app = create_app(settings=settings, threads=args.threads)
    _stderr(f"qa: serving on http://{args.host}:{args.port} (docs: /docs); loading the model in the background…")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning", access_log=args.verbose)
    return 0


# -- parser ------------------------------------------------------------------------
def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options accepted before and after the command (``qa --index X search …``, ``qa search --index X …``)."""
    parser.add_argument("--index", metavar="DIR", default=default, help="index folder (default: QA_INDEX_DIR or .qa/index)")
    parser.add_argument(
        "--model", metavar="NAME", default=default, help="embedding model (default: QA_EMBEDDING_MODEL or multilingual-e5-small)"
    )
    parser.add_argument("--chroma-url", metavar="URL", default=default, help="use a Chroma server (default: QA_CHROMA_URL)")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help="keep the manifest, BM25 and locks in PostgreSQL (default: QA_DATABASE_URL; needs --chroma-url)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=default or False, help="log what happens")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    """The filters of ``search`` and ``ask``."""
    parser.add_argument("--source", action="append", help="only this source (repeatable)")
    parser.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="only articles dated on or after")
    parser.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="only articles dated on or before")


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The filter flags as keyword arguments of ``search``/``ask``, validated (a bad date names its flag's field)."""
    from qa.retrieval.filters import Filters

    return Filters.of(source=args.source, date_from=args.date_from, date_to=args.date_to).as_kwargs()


TRAINING_COMMANDS = {
    "train-reader": (
        "train the reader model from the offline e5 weights (needs torch; see qa/answering/reading/models)",
        "qa.training",
        "add_arguments",
        "cmd_train_reader",
    ),
    "fit-combiner": (
        "fit the reader's combiner on the training split, its threshold on dev",
        "qa.training",
        "add_combiner_arguments",
        "cmd_fit_combiner",
    ),
    "train-span": (
        "train the short-answer span model from the offline e5 weights (needs torch; see qa/answering/reading/models)",
        "qa.training.span",
        "add_span_arguments",
        "cmd_train_span",
    ),
    "gen-news": (
        "generate training questions from news articles (OrangeSum), with near misses and unanswerable variants",
        "qa.training.news",
        "add_arguments",
        "cmd_gen_news",
    ),
}
"""The training commands: ``name → (help, module, its options' function, its command)``, imported only when run."""


def _training_command(argv: Sequence[str]) -> str:
    """The training command ``argv`` runs, or ``""`` for another command."""
    return next((arg for arg in argv if arg in TRAINING_COMMANDS), "")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``qa`` parser. Given the ``argv`` it will parse, the training commands' options are added only when one of
    them runs: ``qa.training`` is not imported for the others (``None``: every command complete)."""
    training = None if argv is None else _training_command(argv)
    parser = argparse.ArgumentParser(prog="qa", description="Question answering over a corpus of news articles.")
    _common_options(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", parents=[common], help="add or update articles (.txt, .md, .html, .jsonl files or folders)")
    p.add_argument("paths", nargs="*", help="files or folders (default: QA_CORPUS_DIR or corpus/)")
    p.add_argument("--rebuild", action="store_true", help="forget the index first and re-embed everything")
    p.add_argument("--prune", action="store_true", help="also remove articles whose files under the given folders are gone")
    p.add_argument("--dry-run", action="store_true", help="with --prune: only list what would be removed")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once if another ingest holds the index, instead of queueing; with QA_DATABASE_URL: enqueue the "
        "articles for `qa worker` processes and return",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", parents=[common], help="find the passages closest to a question")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=5, help="number of passages (default 5)")
    _filter_options(p)
    p.add_argument("--json", action="store_true", help="print passages as JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", parents=[common], help="answer a question from the corpus, with citations")
    p.add_argument("question")
    p.add_argument("--answerer", metavar="SPEC", help="extractive (default), openai:MODEL, ollama:MODEL or llamacpp:PATH")
    p.add_argument("-k", type=int, default=5, help="passages to read (default 5)")
    _filter_options(p)
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("eval", parents=[common], help="measure retrieval and answers on a SQuAD-format file")
    p.add_argument(
        "format",
        choices=["squad", "news"],
        help="squad: SQuAD v1/v2 JSON (PIAF, FQuAD, SQuAD); news: the news question set (JSONL) over --articles",
    )
    p.add_argument("file", nargs="+", help="the SQuAD-format JSON file(s), or the news questions (JSONL)")
    p.add_argument(
        "--articles",
        default="../shared/data/orangesum-12k.jsonl.gz",
        help="news: the articles the questions were written on, qa ingest's JSONL, gzipped or not",
    )
    p.add_argument("--corpus-size", type=int, default=2000, help="news: index the first N articles of --articles (default 2000)")
    p.add_argument("--per-question", action="store_true", help="news: keep each question's outcome in the JSON")
    p.add_argument("-k", "--k", type=int, default=5, help="passages read per question (default 5)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N questions (all paragraphs are indexed)")
    p.add_argument("--compare", action="store_true", help="also measure each stage: dense, lexical, hybrid, rerank")
    p.add_argument("--unanswerable", action="store_true", help="also ask each question with its paragraph left out")
    p.add_argument("--no-answers", action="store_true", help="retrieval metrics only")
    p.add_argument("--answerer", metavar="SPEC", help="extractive (default) or provider:model")
    p.add_argument(
        "--split",
        choices=["all", "dev", "train"],
        default="all",
        help="ask only the questions of the dev (or train) articles — squad: the reader's split, news: the set's own; "
        "every article is indexed (default all)",
    )
    p.add_argument(
        "--stages", action="store_true", help="answers stage by stage: lexical only, reader only, combined (extractive:…)"
    )
    p.add_argument("--report", metavar="FILE.md", help="also write a Markdown report, and its recall@k plot as FILE-recall.png")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("delete", parents=[common], help="remove articles by id")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("check", parents=[common], help="verify the index (manifest, Chroma, lexical); --repair fixes it")
    p.add_argument("--repair", action="store_true", help="fix what the check finds (delete orphans, re-index broken articles)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("serve", parents=[common], help="serve the HTTP API (FastAPI; docs at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--threads", type=int, default=4, help="worker threads for searches and answers (default 4)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker", parents=[common], help="write articles from the shared ingest queue (QA_DATABASE_URL), on any machine"
    )
    p.add_argument("--until-empty", action="store_true", help="stop when the queue is empty (default: wait for more)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per batch")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("init-db", parents=[common], help="create the PostgreSQL schema (QA_DATABASE_URL) if missing")
    p.set_defaults(func=cmd_init_db)

    p = sub.add_parser("info", parents=[common], help="what the index holds and how it was built")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    for name, (help_text, module, arguments, command) in TRAINING_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if training is None or training == name:  # qa.training (torch's side of the project) only for its commands
            trainer = importlib.import_module(module)
            getattr(trainer, arguments)(p)
            p.set_defaults(func=getattr(trainer, command))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except QAError as exc:
        _stderr(f"qa: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _stderr("qa: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
