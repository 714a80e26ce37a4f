"""The built-in corpus: the English reference text that ships with CPython.

``pydoc_data.topics`` holds the Python language reference sections that
``help()`` shows (about 465 kB of English prose and code), so every Python
installation can train a model offline, with no download.
"""

from __future__ import annotations


def builtin_documents() -> list[tuple[str, str]]:
    """(topic, text) pairs of the built-in corpus, sorted by topic (deterministic)."""
    from pydoc_data.topics import topics  # noqa: PLC0415

    return [(name, topics[name]) for name in sorted(topics)]


def builtin_corpus() -> str:
    """The whole built-in corpus as one text, documents separated by blank lines."""
    return "\n\n".join(text.strip("\n") for _, text in builtin_documents())


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split a text into (train, val) at a line boundary; the last part is validation.

    Deterministic: the same text always gives the same split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1); got {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.rfind("\n", 0, cut)
    cut = newline + 1 if newline > 0 else cut
    return text[:cut], text[cut:]
