"""Translation data: sentence pairs from a TSV file or the system's gettext catalogs,
a deterministic train/dev split, and padded batches for sequence-to-sequence models.

Sources of pairs:

    read_pairs(path)    a TSV file, one ``source<TAB>target`` pair a line
    builtin_pairs(lang) English -> lang pairs from the compiled gettext catalogs
                        (``.mo``) the operating system ships: every program
                        translated into German keeps its English messages
                        (msgid) and their German translations (msgstr) there.
                        They are read at run time, never copied into this
                        package; a machine without them needs --pairs FILE.tsv.
    read_mo(path)       every entry of one ``.mo`` file, parsed by hand

A compiled catalog (GNU gettext's ``.mo`` format), all integers 32-bit in the
byte order that the magic number reveals:

    offset  0   magic 0x950412de (read in the other order: 0xde120495)
            4   revision: major << 16 | minor; major 0 or 1
            8   N, the number of entries
           12   O, offset of the table of original strings
           16   T, offset of the table of translations
           20   (hash table size and offset: not needed to read every entry)
    at O + 8i   length and offset of original i    (i = 0 .. N-1)
    at T + 8i   length and offset of translation i
    a string    `length` bytes at `offset`, then a NUL (not counted in length)

An original ``ctxt\\x04msgid`` has a context; ``msgid\\0msgid_plural`` is a
plural entry whose translation is ``msgstr[0]\\0msgstr[1]...``. The entry with
msgid "" is the header (``Content-Type: text/plain; charset=UTF-8`` ...); both
sides of every entry are decoded with the header's charset. Revision 1 may add
"system-dependent" strings (formats such as ``<PRIu64>``) in segments of their
own; they are format strings, which builtin_pairs drops anyway, and are not read.

Batches (TranslationBatches): each pair once per epoch, in a new random order
every epoch; sources right-padded into ``input_ids`` (B, S) with an
``attention_mask``; targets into ``labels`` (B, T), -100 (ignored by the loss)
on the padding. The model makes its decoder inputs by shifting the labels
right, as transformers' encoder-decoder models do.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import re
import struct
import unicodedata
from dataclasses import dataclass, field

import numpy as np


class TranslationDataError(ValueError):
    """A pairs file or a catalog that cannot be read as its format says; names the place."""


class NoCatalogsError(FileNotFoundError):
    """No gettext catalogs for the language asked: name the directories, suggest --pairs."""


# --- a TSV file of pairs -------------------------------------------------------------

def read_pairs(path) -> list[tuple[str, str]]:
    """(source, target) pairs from a UTF-8 TSV file, one ``source<TAB>target`` a line.

    Lines end at "\\n"; a "\\r" before it (Windows files) goes too, and nothing
    else is stripped. A byte-order mark at the start is skipped; blank lines
    (empty or white space only) are skipped. Any other line must have exactly
    one tab and text on both sides, else TranslationDataError names the file
    and the line number.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_pairs: no such file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    pairs = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TranslationDataError(f"{path}:{number}: not UTF-8 text ({exc.reason} at "
                                       f"byte {exc.start} of the line)") from None
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise TranslationDataError(
                f"{path}:{number}: expected 2 columns, source<TAB>target; found {len(fields)} "
                f"({len(fields) - 1} tabs): {line[:60]!r}")
        source, target = fields
        for side, text in (("source", source), ("target", target)):
            if not text.strip():
                raise TranslationDataError(f"{path}:{number}: the {side} is empty: {line[:60]!r}")
        pairs.append((source, target))
    return pairs


# --- a compiled gettext catalog (.mo) ----------------------------------------------------

MO_MAGIC = 0x950412de


def _mo_charset(path, header: bytes) -> str:
    """The charset of a catalog header's Content-Type; UTF-8 when none is given."""
    match = re.search(rb"charset=([^\s;]+)", header, re.IGNORECASE)
    charset = match.group(1).decode("ascii", "replace") if match else "UTF-8"
    if charset.upper() == "CHARSET":          # the placeholder of an unfilled template
        charset = "UTF-8"
    try:
        "".encode(charset)
    except LookupError:
        raise TranslationDataError(f"{path}: the header names charset {charset!r}, which "
                                   "Python cannot decode") from None
    return charset


def read_mo(path) -> list[tuple[str, str]]:
    """Every (msgid, msgstr) entry of a compiled gettext catalog, in the file's order.

    Entries come as stored: the header is ("", header text); a plural entry is
    ("msgid\\0msgid_plural", "msgstr[0]\\0msgstr[1]..."); a context is
    "ctxt\\x04msgid". A truncated or corrupt file raises TranslationDataError
    naming the file and the fault.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    size = len(data)
    if size < 20:
        raise TranslationDataError(f"{path}: truncated: {size} bytes, shorter than the 20-byte "
                                   "header of a .mo file")
    if struct.unpack("<I", data[:4])[0] == MO_MAGIC:
        order = "<"                            # little-endian
    elif struct.unpack(">I", data[:4])[0] == MO_MAGIC:
        order = ">"                            # big-endian
    else:
        raise TranslationDataError(f"{path}: not a .mo file (magic number 0x{data[:4].hex()}, "
                                   "expected 0x950412de in either byte order)")
    revision, n, originals, translations = struct.unpack(order + "4I", data[4:20])
    if revision >> 16 not in (0, 1):
        raise TranslationDataError(f"{path}: unknown .mo revision {revision >> 16}."
                                   f"{revision & 0xffff} (this reader knows major revisions "
                                   "0 and 1)")
    for name, offset in (("originals", originals), ("translations", translations)):
        if offset + 8 * n > size:
            raise TranslationDataError(
                f"{path}: truncated or corrupt: the table of {name} ({n} entries at offset "
                f"{offset}) ends at byte {offset + 8 * n}, past the end of the file ({size} bytes)")

    def string(table, i, name):
        length, offset = struct.unpack(order + "2I", data[table + 8 * i:table + 8 * i + 8])
        if offset + length >= size:           # >=: the NUL after the string must fit too
            raise TranslationDataError(
                f"{path}: truncated or corrupt: {name} {i} ({length} bytes at offset {offset}) "
                f"runs past the end of the file ({size} bytes)")
        if data[offset + length] != 0:
            raise TranslationDataError(f"{path}: corrupt: {name} {i} (at offset {offset}) is "
                                       "not followed by a NUL byte")
        return data[offset:offset + length]

    raw = [(string(originals, i, "original"), string(translations, i, "translation"))
           for i in range(n)]
    header = next((msgstr for msgid, msgstr in raw if msgid == b""), b"")
    charset = _mo_charset(path, header)
    entries = []
    for i, (msgid, msgstr) in enumerate(raw):
        try:
            entries.append((msgid.decode(charset), msgstr.decode(charset)))
        except UnicodeDecodeError as exc:
            raise TranslationDataError(f"{path}: entry {i} is not valid {charset} "
                                       f"({exc.reason})") from None
    return entries


# --- what makes a catalog entry a poor sentence pair ------------------------------------

# printf: %s %d %5.2f %-10s %ld %zu %1$s %*d %'d %%, and Qt's %1 %2 (which also
# catches every positional %1$s: the \d+\$ below is there for the reader)
_PRINTF = (r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*(?:\d+\$)?)?(?:\.(?:\d+|\*(?:\d+\$)?))?"
           r"(?:hh|h|ll|l|L|q|j|z|Z|t)?[diouxXeEfFgGaAcCsSpnm%]|%\d")
_PYTHON = r"%\([^)]*\)[-+ #0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa%]"        # %(name)s
_BRACE = r"\{\w*(?:[.\[][^{}]*)?(?:![rsa])?(?::[^{}]*)?\}"              # {} {0} {name:>8}
_SHELL = r"\$\{?[A-Za-z_]\w*\}?"                                        # $HOME ${HOME}
_FORMAT = re.compile(f"{_PRINTF}|{_PYTHON}|{_BRACE}|{_SHELL}")
_ACCELERATOR = re.compile(r"[_&][^\W\d_]")      # _File E_xit &Open (and LC_ALL, &amp;)


def is_format_string(text: str) -> bool:
    """True when text holds a placeholder that a program fills in at run time:

        printf   %s %d %5.2f %-10s %ld %zu %1$s %*d %% (and Qt's %1)
        Python   %(name)s
        braces   {} {0} {name} {name:>8} {0.attr}
        shell    $VAR ${VAR}

    Deliberately eager: "100% sure" reads as the printf conversion "% s".
    """
    return _FORMAT.search(text) is not None


def has_accelerator(text: str) -> bool:
    """True when "_" or "&" comes right before a letter: a menu accelerator (_File,
    E_xit, &Open) or an identifier (LC_ALL, snake_case) or an HTML entity (&amp;)."""
    return _ACCELERATOR.search(text) is not None


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _drop_reason(msgid: str, msgstr: str, max_chars: int):
    """Why a catalog entry makes no demo pair (None: it does); the first rule that applies."""
    if msgid == "":
        return "header"
    if "\x00" in msgid:
        return "plural"
    if "\x04" in msgid:
        return "context"
    if _has_control(msgid) or _has_control(msgstr):
        return "control character"
    source, target = msgid.strip(), msgstr.strip()
    if not target or target == source:
        return "untranslated"
    if is_format_string(source) or is_format_string(target):
        return "format string"
    if has_accelerator(source) or has_accelerator(target):
        return "accelerator"
    if not any(ch.isalpha() for ch in source) or not any(ch.isalpha() for ch in target):
        return "no letters"
    if len(source) > max_chars or len(target) > max_chars:
        return "too long"
    return None


# --- a deterministic train/dev split --------------------------------------------------

def _dev_position(source: str) -> float:
    """A number in [0, 1) fixed by the source text alone: the 8-byte BLAKE2b digest
    of its UTF-8 bytes, read as a big-endian integer, over 2^64. The same on every
    run and machine, unlike Python's hash(), which is salted per process."""
    digest = hashlib.blake2b(source.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_pairs(pairs, dev_fraction: float = 0.03):
    """(train, dev): a pair goes to dev when the hash of its source falls below
    dev_fraction, so about that fraction goes there, the choice never changes as
    pairs are added or removed, and equal sources always land on the same side."""
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"split_pairs: dev_fraction must be in [0, 1); got {dev_fraction}")
    train, dev = [], []
    for pair in pairs:
        (dev if _dev_position(pair[0]) < dev_fraction else train).append(pair)
    return train, dev


# --- the built-in pairs: the system's gettext catalogs -------------------------------------

# Where Debian, Ubuntu and most Linux systems keep compiled catalogs, as
# DIR/LANG/LC_MESSAGES/*.mo; a pattern with * is expanded (vim's menus and messages).
DEFAULT_LOCALE_DIRS = (
    "/usr/share/locale",            # every package's messages
    "/usr/share/locale-langpack",   # Ubuntu's language packs
    "/usr/local/share/locale",      # locally built programs
    "/usr/share/vim/vim*/lang",     # vim keeps its own
)


@dataclass
class TranslationPairs:
    """Built-in pairs, split, with where they came from and what was left out."""
    train: list                       # (source, target) pairs
    dev: list
    language: str                     # the target language
    files: list                       # the catalogs read, in reading order
    dropped: dict = field(default_factory=dict)   # reason -> entries dropped for it
    skipped: list = field(default_factory=list)   # (path, error) of catalogs not readable


def _language_dirs(roots, target_lang):
    """DIR/LANG/LC_MESSAGES for LANG equal to target_lang or target_lang.CODESET."""
    found = []
    for root in roots:
        for base in sorted(glob.glob(root)) if glob.has_magic(root) else [root]:
            if not os.path.isdir(base):
                continue
            for name in sorted(os.listdir(base)):
                if name == target_lang or name.split(".", 1)[0] == target_lang:
                    messages = os.path.join(base, name, "LC_MESSAGES")
                    if os.path.isdir(messages):
                        found.append(messages)
    return found


def _languages_under(roots):
    names = set()
    for root in roots:
        for base in sorted(glob.glob(root)) if glob.has_magic(root) else [root]:
            if os.path.isdir(base):
                names.update(n.split(".", 1)[0] for n in os.listdir(base)
                             if glob.glob(os.path.join(base, n, "LC_MESSAGES", "*.mo")))
    return sorted(names)


def builtin_pairs(target_lang: str = "de", locale_dirs=None, *, max_chars: int = 200,
                  dev_fraction: float = 0.03) -> TranslationPairs:
    """English -> target_lang sentence pairs from the system's gettext catalogs, split.

    Reads every DIR/LANG/LC_MESSAGES/*.mo under locale_dirs (default
    DEFAULT_LOCALE_DIRS), where LANG is target_lang ("de", "pt_BR") or
    target_lang with a codeset ("ja.euc-jp"); "de" does not take "de_CH".
    The order of reading, which decides the duplicates: locale_dirs in the
    order given, then language directories, then files, each sorted by name;
    the entries of a file in the file's order.

    Each entry (msgid -> msgstr) is dropped, counted in .dropped under the
    first reason that applies, when it is
        header             the catalog header (msgid "")
        plural             a plural entry (msgid\\0msgid_plural)
        context            an entry with a context (ctxt\\x04msgid)
        control character  any control character (new line, tab, ...) on either
                           side: multi-line help texts go
        untranslated       msgstr empty or equal to msgid (after stripping)
        format string      a placeholder on either side (is_format_string)
        accelerator        "_" or "&" before a letter on either side
                           (has_accelerator): dropped, not stripped, since the
                           same marks make identifiers (LC_ALL) and entities
        no letters         a side without a single letter ("--", "...")
        too long           a side longer than max_chars characters
        duplicate          the source seen before (the first one is kept)
    Kept pairs have white space stripped at both ends of each side.
    dev_fraction (default 0.03, a few hundred pairs for German) goes to .dev by
    the hash of the source (split_pairs). Catalogs that cannot be read are
    listed in .skipped with the reason, not fatal.

    Raises NoCatalogsError when no catalog is found for target_lang.
    """
    if not isinstance(target_lang, str) or not re.fullmatch(r"[A-Za-z0-9_@.\-]+", target_lang):
        raise ValueError(f"builtin_pairs: target_lang must be a locale name such as 'de' or "
                         f"'pt_BR'; got {target_lang!r}")
    if max_chars < 1:
        raise ValueError(f"builtin_pairs: max_chars must be >= 1; got {max_chars}")
    if locale_dirs is None:
        locale_dirs = DEFAULT_LOCALE_DIRS
    elif isinstance(locale_dirs, (str, os.PathLike)):
        locale_dirs = [locale_dirs]
    roots = [os.fspath(d) for d in locale_dirs]
    files = [path for messages in _language_dirs(roots, target_lang)
             for path in sorted(glob.glob(os.path.join(messages, "*.mo")))]
    if not files:
        languages = _languages_under(roots)
        shown = ", ".join(languages[:40]) + (", ..." if len(languages) > 40 else "")
        raise NoCatalogsError(
            f"builtin_pairs: no gettext catalogs (.mo) for language {target_lang!r} in "
            f"{', '.join(roots)} (looked for DIR/{target_lang}/LC_MESSAGES/*.mo); "
            + (f"languages with catalogs there: {shown}; " if languages else "")
            + "give your own sentence pairs with --pairs FILE.tsv (one source<TAB>target a line)")
    pairs, seen, dropped, read, skipped = [], set(), {}, [], []
    for path in files:
        try:
            entries = read_mo(path)
        except (OSError, TranslationDataError) as exc:
            skipped.append((path, str(exc)))
            continue
        read.append(path)
        for msgid, msgstr in entries:
            reason = _drop_reason(msgid, msgstr, max_chars)
            source = msgid.strip()
            if reason is None and source in seen:
                reason = "duplicate"
            if reason is not None:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            seen.add(source)
            pairs.append((source, msgstr.strip()))
    if not pairs:
        raise TranslationDataError(
            f"builtin_pairs: the {len(read)} readable catalogs for {target_lang!r} left no "
            f"usable pairs (dropped: {dropped}; unreadable: {len(skipped)}); give your own "
            "with --pairs FILE.tsv")
    train, dev = split_pairs(pairs, dev_fraction)
    return TranslationPairs(train, dev, target_lang, read, dropped, skipped)


# --- batches for sequence-to-sequence training --------------------------------------------

def pad_translation_batch(sources, targets, pad_token_id: int):
    """Model inputs of lists of source and target id sequences, right-padded per batch:

        input_ids       (B, S) int64, pad_token_id after each source, S = longest source
        attention_mask  (B, S) int64, 1 on tokens, 0 on padding
        labels          (B, T) int64, the targets, -100 after each, T = longest target
    """
    B = len(sources)
    S, T = max(len(s) for s in sources), max(len(t) for t in targets)
    batch = {"input_ids": np.full((B, S), pad_token_id, dtype=np.int64),
             "attention_mask": np.zeros((B, S), dtype=np.int64),
             "labels": np.full((B, T), -100, dtype=np.int64)}
    for i, (src, tgt) in enumerate(zip(sources, targets)):
        batch["input_ids"][i, :len(src)] = src
        batch["attention_mask"][i, :len(src)] = 1
        batch["labels"][i, :len(tgt)] = tgt
    return batch


def _id_arrays(where, sequences, max_length, eos_token_id):
    """Each sequence as an int64 array, truncated to max_length (ending in eos when given)."""
    out = []
    for i, seq in enumerate(sequences):
        arr = np.asarray(seq)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"TranslationBatches: {where}[{i}] must be a non-empty list of "
                             f"token ids; got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"TranslationBatches: {where}[{i}] must hold integer ids; "
                            f"got dtype {arr.dtype}")
        if arr.min() < 0:
            raise ValueError(f"TranslationBatches: {where}[{i}] has a negative id {arr.min()}")
        arr = arr.astype(np.int64)
        if max_length is not None and len(arr) > max_length:
            arr = arr[:max_length].copy()
            if eos_token_id is not None:
                arr[-1] = eos_token_id        # a truncated sequence still ends
        out.append(arr)
    return out


class TranslationBatches:
    """Mini-batches of pre-tokenized (source, target) pairs for an encoder-decoder.

    Every pair comes once per epoch, in a new random order every epoch; the last
    batch of an epoch may be smaller. Sources longer than max_source_length and
    targets longer than max_target_length are cut (the last kept id becomes
    eos_token_id when one is given, so a cut sequence still ends in EOS).
    Batches are padded to their own longest sequence (pad_translation_batch).

    Bucketing (pool_batches = k > 0): each epoch's shuffled order is cut into
    pools of k * batch_size pairs; each pool is sorted by (source length, target
    length) and cut into batches, and the batches of the whole epoch are
    shuffled. Pairs of like length share a batch, so there is less padding,
    while every epoch still differs. pool_batches = 0: plain shuffled batches.

    The generator's state at the start of the epoch, the epoch and the position
    in it are the whole state: ``state_dict`` / ``load_state_dict`` rebuild the
    epoch's batches and resume exactly.
    """

    def __init__(self, source_ids, target_ids, batch_size: int, pad_token_id: int,
                 max_source_length: int | None = None, max_target_length: int | None = None,
                 seed: int = 0, pool_batches: int = 0, eos_token_id: int | None = None):
        if len(source_ids) != len(target_ids):
            raise ValueError(f"TranslationBatches: source_ids and target_ids must have the same "
                             f"length; got {len(source_ids)} and {len(target_ids)}")
        if not len(source_ids):
            raise ValueError("TranslationBatches: no pairs to train on")
        for name, value, low in (("batch_size", batch_size, 1), ("pad_token_id", pad_token_id, 0),
                                 ("pool_batches", pool_batches, 0),
                                 ("max_source_length", max_source_length, 1),
                                 ("max_target_length", max_target_length, 1)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value < low):
                raise ValueError(f"TranslationBatches: {name} must be an integer >= {low}; "
                                 f"got {value!r}")
        self.sources = _id_arrays("source_ids", source_ids, max_source_length, eos_token_id)
        self.targets = _id_arrays("target_ids", target_ids, max_target_length, eos_token_id)
        self.source_lengths = np.array([len(s) for s in self.sources])
        self.target_lengths = np.array([len(t) for t in self.targets])
        self.batch_size, self.pad_token_id = batch_size, pad_token_id
        self.pool_batches = pool_batches
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self._plan_epoch()

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.sources) / self.batch_size)

    def _plan_epoch(self):
        """This epoch's batches (arrays of pair indices), drawn from self.rng."""
        self._epoch_rng_state = self.rng.bit_generator.state
        B, order = self.batch_size, self.rng.permutation(len(self.sources))
        if not self.pool_batches:
            batches = [order[i:i + B] for i in range(0, len(order), B)]
        else:
            pool = self.pool_batches * B
            batches = []
            for start in range(0, len(order), pool):
                chunk = order[start:start + pool]
                # lexsort sorts by its last key first: source length, then target length
                chunk = chunk[np.lexsort((self.target_lengths[chunk], self.source_lengths[chunk]))]
                batches += [chunk[i:i + B] for i in range(0, len(chunk), B)]
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        self.batches, self.position = batches, 0

    def next_batch(self):
        """A dict of int64 ``input_ids``, ``attention_mask`` (B, S) and ``labels`` (B, T)."""
        if self.position >= len(self.batches):
            self.epoch += 1
            self._plan_epoch()
        rows = self.batches[self.position]
        self.position += 1
        return pad_translation_batch([self.sources[i] for i in rows],
                                     [self.targets[i] for i in rows], self.pad_token_id)

    def state_dict(self):
        return {"rng": self._epoch_rng_state, "epoch": self.epoch, "position": self.position,
                "num_pairs": len(self.sources)}

    def load_state_dict(self, state):
        if state["num_pairs"] != len(self.sources):
            raise ValueError(f"TranslationBatches.load_state_dict: the state is of "
                             f"{state['num_pairs']} pairs; these batches hold "
                             f"{len(self.sources)}")
        self.rng.bit_generator.state = state["rng"]
        self._plan_epoch()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
