"""Exact and near-duplicate groups of texts (MinHash LSH over character shingles, from datasketch)."""

from __future__ import annotations

import re
from collections import defaultdict

_WORD = re.compile(r"\w+")


def _normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _groups(pairs: list[tuple[int, int]], count: int) -> list[list[int]]:
    """Connected components (size > 1) of the pair graph, by union-find."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(count):
        members[root(i)].append(i)
    return sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])


def exact_groups(texts: list[str]) -> list[list[int]]:
    """Indices of texts equal after lower-casing and dropping punctuation and spacing."""
    first: dict[str, int] = {}
    pairs = []
    for i, text in enumerate(texts):
        key = _normalized(text)
        if key in first:
            pairs.append((first[key], i))
        else:
            first[key] = i
    return _groups(pairs, len(texts))


def near_groups(texts: list[str], threshold: float = 0.8, shingle: int = 5, num_perm: int = 128,
                seed: int = 1) -> list[list[int]]:
    """Indices of texts whose Jaccard similarity of character ``shingle``-grams is ``threshold`` or more.

    Character shingles suit short rows (instructions, tickets), where one changed word would
    remove most word shingles. Candidates from LSH are confirmed on their MinHash estimate.
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = []
    for i, text in enumerate(texts):
        norm = _normalized(text)
        grams = {norm[j : j + shingle] for j in range(max(1, len(norm) - shingle + 1))}
        signature = MinHash(num_perm=num_perm, seed=seed)
        for gram in grams:
            signature.update(gram.encode("utf-8"))
        signatures.append(signature)
        lsh.insert(str(i), signature)
    pairs = [
        (i, int(other))
        for i, signature in enumerate(signatures)
        for other in lsh.query(signature)
        if int(other) > i and signature.jaccard(signatures[int(other)]) >= threshold
    ]
    return _groups(pairs, len(texts))
