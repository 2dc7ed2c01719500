"""GPU name normalisation, shared by database validation, NVML matching and ``resolve_gpu``.

"NVIDIA GeForce RTX 4090", "rtx-4090" and "4090" all reduce to the tokens ("4090",): vendor and
brand words carry no identity, case and punctuation are ignored, and a number glued to a unit
("80GB", "4070Ti") is split so "80 GB" and "80GB" agree.
"""
from __future__ import annotations

import re

# words that name a vendor or product line rather than a GPU
FILLER_WORDS = frozenset({"nvidia", "geforce", "tesla", "rtx", "gtx", "amd", "instinct", "apple", "gpu", "quadro"})

_SEPARATORS = re.compile(r"[\s\-_/(),]+")
_DIGIT_THEN_LETTER = re.compile(r"(?<=\d)(?=[a-z])")


def name_tokens(text: str) -> tuple[str, ...]:
    words = []
    for word in _SEPARATORS.split(text.lower()):
        words.extend(part for part in _DIGIT_THEN_LETTER.split(word) if part)
    return tuple(w for w in words if w not in FILLER_WORDS)


def name_key(text: str) -> str:
    """A compact key: equal keys mean the same GPU name ("H100-SXM" == "h100 sxm" == "H100SXM")."""
    return "".join(name_tokens(text))
