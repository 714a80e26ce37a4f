"""Translation data: TSV pairs, .mo catalogs (written here byte by byte), the built-in
pairs and their filters, the train/dev split, and seq2seq batches."""

import gettext
import glob
import io
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchlm.data import (
    NoCatalogsError, TranslationBatches, TranslationDataError, builtin_pairs,
    pad_translation_batch, read_mo, read_pairs, split_pairs)
from scratchlm.data.translation import _dev_position, has_accelerator, is_format_string

# --- a .mo writer -------------------------------------------------------------------


def mo_bytes(entries, order="<", charset="UTF-8", revision=0):
    """A compiled catalog of (msgid, msgstr) str entries, in the given order and byte order.

    The layout of GNU msgfmt: a 28-byte header, the table of originals, the table
    of translations (each entry: length, offset), no hash table, then every
    string followed by a NUL.
    """
    n = len(entries)
    strings = ([i.encode(charset) for i, _ in entries]              # originals, then
               + [s.encode(charset) for _, s in entries])           # translations
    first_string = 28 + 16 * n
    tables, blob = b"", b""
    for text in strings:
        tables += struct.pack(order + "2I", len(text), first_string + len(blob))
        blob += text + b"\0"
    header = struct.pack(order + "7I", 0x950412de, revision, n, 28, 28 + 8 * n, 0, 0)
    return header + tables + blob


HEADER = ("", ("Project-Id-Version: demo 1.0\nLanguage: de\n"
               "Content-Type: text/plain; charset={charset}\n"
               "Plural-Forms: nplurals=2; plural=(n != 1);\n"))
ENTRIES = [
    ("Open the file", "Datei öffnen"),
    ("%d file\0%d files", "%d Datei\0%d Dateien"),                # plural
    ("menu\x04Open", "Öffnen"),                                    # context
    ("Grüße", "Grüße – “quoted”"),
    ("Quit", ""),                                                  # untranslated
]


def catalog(charset="UTF-8"):
    return [(HEADER[0], HEADER[1].format(charset=charset))] + ENTRIES


@pytest.mark.parametrize("order", ["<", ">"])
def test_read_mo_returns_what_was_written(tmp_path, order):
    path = tmp_path / "demo.mo"
    path.write_bytes(mo_bytes(catalog(), order))
    assert read_mo(path) == catalog()
    # the writer is right: Python's own reader sees the same catalog
    t = gettext.GNUTranslations(io.BytesIO(mo_bytes(catalog(), order)))
    assert t.gettext("Open the file") == "Datei öffnen"
    assert t.ngettext("%d file", "%d files", 2) == "%d Dateien"
    assert t.pgettext("menu", "Open") == "Öffnen"


def test_read_mo_decodes_with_the_header_charset(tmp_path):
    path = tmp_path / "latin1.mo"
    entries = [e for e in catalog("ISO-8859-1") if "“" not in e[1]]
    path.write_bytes(mo_bytes(entries, charset="ISO-8859-1"))
    assert read_mo(path) == entries
    assert b"\xf6ffnen" in path.read_bytes()                      # "ö" in Latin-1, one byte
    # no header: UTF-8; revision 1 (major 0, minor 1) and major 1 read the same
    for revision in (1, 0x10001):
        path.write_bytes(mo_bytes(ENTRIES, revision=revision))
        assert read_mo(path) == ENTRIES


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(st.lists(st.tuples(TEXT, TEXT), max_size=8), st.sampled_from(["<", ">"]))
def test_read_mo_round_trips_any_text(tmp_path_factory, entries, order):
    path = tmp_path_factory.mktemp("mo") / "case.mo"
    path.write_bytes(mo_bytes(entries, order))
    assert read_mo(path) == entries


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:12], "truncated: 12 bytes"),
    (lambda b: b"\0\1\2\3" + b[4:], "not a .mo file"),
    (lambda b: b[:4] + struct.pack("<I", 2 << 16) + b[8:], "unknown .mo revision 2.0"),
    (lambda b: b[:60], "table of originals .* past the end of the file"),
    (lambda b: b[:100], "table of translations .* past the end of the file"),
    (lambda b: b[:-1], "translation 5 .* runs past the end of the file"),
    (lambda b: b[:-3], "translation 4 .* runs past the end of the file"),
    (lambda b: b[:-1] + b"x", "translation 5 .* not followed by a NUL byte"),
    # (the same number of bytes, so the tables still point at the right places)
    (lambda b: b.replace("Datei öffnen".encode(), b"Datei \xff\xffffnen"),
     "entry 1 is not valid UTF-8"),
    (lambda b: b.replace(b"charset=UTF-8", b"charset=nonsu"), "charset 'nonsu'"),
])
def test_corrupt_mo_files_raise_a_clear_error(tmp_path, damage, message):
    path = tmp_path / "broken.mo"
    path.write_bytes(damage(mo_bytes(catalog())))
    with pytest.raises(TranslationDataError, match=message) as info:
        read_mo(path)
    assert str(path) in str(info.value)


def test_read_mo_agrees_with_gettext_on_system_catalogs():
    paths = sorted(glob.glob("/usr/share/locale/de/LC_MESSAGES/*.mo"))[:6]
    if not paths:
        pytest.skip("no German catalogs on this machine")
    for path in paths:
        entries = read_mo(path)
        with open(path, "rb") as f:
            reference = gettext.GNUTranslations(f)._catalog
        singular = {i: s for i, s in entries if "\0" not in i}
        assert singular == {k: v for k, v in reference.items() if isinstance(k, str)}, path


# --- the filters -------------------------------------------------------------------

FORMATS = ["%s", "%d", "%5.2f", "%-10s", "%ld", "%zu", "%1$s", "%*d", "%%", "%1", "%'d",
           "%(name)s", "%(count)d", "{}", "{0}", "{name}", "{name:>8}", "{0.attr}",
           "$HOME", "${HOME}", "%m", "%lu", "%llx", "%.3s"]
SAFE = st.text(st.characters(blacklist_characters="%{$", blacklist_categories=("Cs",)),
               max_size=30)


@given(SAFE)
def test_text_without_placeholders_is_not_a_format_string(text):
    assert not is_format_string(text)


@given(SAFE, st.sampled_from(FORMATS), SAFE)
def test_any_placeholder_makes_a_format_string(before, placeholder, after):
    assert is_format_string(before + placeholder + after)


def test_filters_by_hand():
    assert not is_format_string("Tom & Jerry cost 5 dollars {on|off} 50%")
    assert is_format_string("100% sure")                       # "% s": eager on purpose
    for text in ("_File", "E_xit", "&Open", "Save &As", "LC_ALL", "&amp;"):
        assert has_accelerator(text), text
    for text in ("Tom & Jerry", "a_1", "File", "snake _ case", "__"):
        assert not has_accelerator(text), text


def _write_catalogs(root, files):
    """files: {"de/LC_MESSAGES/a.mo": entries, ...} under root."""
    for name, entries in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mo_bytes(entries))


def test_builtin_pairs_drops_what_it_says(tmp_path):
    header = (HEADER[0], HEADER[1].format(charset="UTF-8"))
    _write_catalogs(tmp_path, {
        "de/LC_MESSAGES/b.mo": [header,
                                ("Open the file", "Datei öffnen"),
                                ("%d file\0%d files", "%d Datei\0%d Dateien"),
                                ("menu\x04Open", "Öffnen"),
                                ("Line one\nLine two", "Zeile eins\nZeile zwei"),
                                ("Quit", ""), ("Name", "Name"),
                                ("Cannot open %s", "Kann %s nicht öffnen"),
                                ("Hello {name}", "Hallo {name}"),
                                ("_Save", "_Speichern"),
                                ("--", "—"),
                                ("A very long sentence indeed", "Ein sehr langer Satz, wirklich"),
                                ("Close window ", " Fenster schließen")],
        "de/LC_MESSAGES/a.mo": [("Open the file", "Die Datei öffnen"), ("Yes", "Ja")],
        "de.UTF-8/LC_MESSAGES/c.mo": [("No", "Nein"), ("Yes", "Jawohl")],
        "de_CH/LC_MESSAGES/a.mo": [("Street", "Strasse")],         # another variant: not read
        "fr/LC_MESSAGES/a.mo": [("Yes", "Oui")],
    })
    result = builtin_pairs("de", [tmp_path], max_chars=25, dev_fraction=0.0)
    # read in order de/a.mo, de/b.mo, de.UTF-8/c.mo; the first translation of a source wins
    assert [p[len(str(tmp_path)):] for p in result.files] == [
        "/de/LC_MESSAGES/a.mo", "/de/LC_MESSAGES/b.mo", "/de.UTF-8/LC_MESSAGES/c.mo"]
    assert result.train == [("Open the file", "Die Datei öffnen"), ("Yes", "Ja"),
                            ("Close window", "Fenster schließen"), ("No", "Nein")]
    assert result.dev == [] and result.skipped == [] and result.language == "de"
    assert result.dropped == {"header": 1, "plural": 1, "context": 1, "control character": 1,
                              "untranslated": 2, "format string": 2, "accelerator": 1,
                              "no letters": 1, "too long": 1, "duplicate": 2}
    assert builtin_pairs("fr", str(tmp_path), dev_fraction=0.0).train == [("Yes", "Oui")]


def test_builtin_pairs_lists_unreadable_catalogs(tmp_path):
    _write_catalogs(tmp_path, {"de/LC_MESSAGES/good.mo": [("Yes", "Ja")]})
    (tmp_path / "de/LC_MESSAGES/bad.mo").write_bytes(b"not a catalog at all")
    result = builtin_pairs("de", [tmp_path], dev_fraction=0.0)
    assert result.train == [("Yes", "Ja")]
    assert len(result.skipped) == 1 and "not a .mo file" in result.skipped[0][1]


def test_missing_language_raises_a_clear_error(tmp_path):
    _write_catalogs(tmp_path, {"de/LC_MESSAGES/a.mo": [("Yes", "Ja")]})
    with pytest.raises(NoCatalogsError, match="--pairs FILE.tsv") as info:
        builtin_pairs("xx", [tmp_path, tmp_path / "nowhere"])
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "'xx'" in message and str(tmp_path / "nowhere") in message and ": de;" in message
    with pytest.raises(ValueError, match="locale name"):
        builtin_pairs("../de", [tmp_path])


# --- the split ---------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_near_the_fraction():
    pairs = [(f"sentence number {i}", f"Satz Nummer {i}") for i in range(20000)]
    train, dev = split_pairs(pairs, 0.03)
    assert (train, dev) == split_pairs(list(pairs), 0.03)
    assert len(train) + len(dev) == len(pairs)
    assert not {s for s, _ in train} & {s for s, _ in dev}
    assert 0.025 < len(dev) / len(pairs) < 0.035
    # a pair keeps its side when others come and go; equal sources share a side
    half = set(pairs[::2])
    assert split_pairs(pairs[::2], 0.03)[1] == [p for p in dev if p in half]
    in_dev = set(dev)
    first_train = next(i for i, p in enumerate(pairs) if p not in in_dev)
    first_dev = next(i for i, p in enumerate(pairs) if p in in_dev)
    for i in (first_train, first_dev):
        extra = (f"sentence number {i}", "another translation")
        train2, dev2 = split_pairs(pairs + [extra], 0.03)
        assert (dev2 if pairs[i] in in_dev else train2)[-1] == extra
    # the position is a fixed function of the text (BLAKE2b), not Python's salted hash()
    assert _dev_position("Hello") == 0x3c5c8a1fdb206886 / 2.0**64
    with pytest.raises(ValueError, match="dev_fraction"):
        split_pairs(pairs, 1.0)


# --- the built-in pairs of this machine ----------------------------------------------

@pytest.fixture(scope="module")
def german():
    try:
        return builtin_pairs("de")
    except NoCatalogsError:
        pytest.skip("this machine ships no German gettext catalogs")


def test_builtin_german_pairs(german):
    pairs = german.train + german.dev
    assert len(german.train) > 5000 and len(german.dev) > 50
    sources = [s for s, _ in pairs]
    assert len(set(sources)) == len(sources)
    assert not {s for s, _ in german.train} & {s for s, _ in german.dev}
    for source, target in pairs:
        assert source and target and source != target
        assert not is_format_string(source) and not is_format_string(target)
        assert "\n" not in source + target and len(source) <= 200 and len(target) <= 200
    assert any(ch in "äöüßÄÖÜ" for _, t in pairs for ch in t)


# --- TSV -----------------------------------------------------------------------------

def test_read_pairs(tmp_path):
    path = tmp_path / "pairs.tsv"
    # a BOM, CRLF, blank lines, spaces inside and at the ends, a line separator in a field
    path.write_bytes("\ufeffHello\tHallo\r\n\n  \nGood  morning \t Guten Morgen \n"
                     "a\u2028b\tc".encode())
    assert read_pairs(path) == [("Hello", "Hallo"), ("Good  morning ", " Guten Morgen "),
                                ("a\u2028b", "c")]
    path.write_text("")
    assert read_pairs(path) == []


@pytest.mark.parametrize("content, message", [
    (b"one\tEins\n\ntwo Zwei\n", r"pairs.tsv:3: expected 2 columns.*found 1 \(0 tabs\)"),
    (b"one\tEins\tuno\n", r"pairs.tsv:1: expected 2 columns.*found 3 \(2 tabs\)"),
    (b"one\tEins\n\ttwo\n", r"pairs.tsv:2: the source is empty"),
    (b"one\t \n", r"pairs.tsv:1: the target is empty"),
    (b"one\tEins\nt\xffo\tzwei\n", r"pairs.tsv:2: not UTF-8"),
])
def test_read_pairs_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(content)
    with pytest.raises(TranslationDataError, match=message):
        read_pairs(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_pairs(tmp_path / "missing.tsv")


# --- batches -------------------------------------------------------------------------

def _pairs(n=23, seed=0):
    rng = np.random.default_rng(seed)
    sources = [list(rng.integers(3, 50, rng.integers(1, 12))) for _ in range(n)]
    targets = [list(rng.integers(3, 50, rng.integers(1, 9))) for _ in range(n)]
    return sources, targets


def _rows(batch, pad=0):
    """The (source, target) pairs a batch holds, read back through its masks."""
    out = []
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        out.append((tuple(ids[mask == 1]), tuple(labels[labels != -100])))
    return out


def test_pad_translation_batch_pads_and_masks():
    batch = pad_translation_batch([[5, 6, 7], [8]], [[9], [10, 11, 12, 13]], pad_token_id=1)
    np.testing.assert_array_equal(batch["input_ids"], [[5, 6, 7], [8, 1, 1]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(batch["labels"], [[9, -100, -100, -100], [10, 11, 12, 13]])
    assert all(v.dtype == np.int64 for v in batch.values())


@pytest.mark.parametrize("pool_batches", [0, 3])
def test_batches_cover_every_pair_once_per_epoch(pool_batches):
    sources, targets = _pairs()
    batches = TranslationBatches(sources, targets, batch_size=4, pad_token_id=0, seed=3,
                                 pool_batches=pool_batches)
    expected = sorted(zip(map(tuple, sources), map(tuple, targets)))
    epochs = []
    for _ in range(2):
        seen = []
        for _ in range(batches.steps_per_epoch):
            batch = batches.next_batch()
            B, S = batch["input_ids"].shape
            assert batch["attention_mask"].shape == (B, S) and batch["labels"].shape[0] == B
            assert (batch["attention_mask"].sum(1) > 0).all()
            # right padding: the mask is ones then zeros; padded ids are the pad id
            assert (np.diff(batch["attention_mask"], axis=1) <= 0).all()
            assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
            seen += _rows(batch)
        assert sorted(seen) == expected
        epochs.append(seen)
    assert epochs[0] != epochs[1] and batches.epoch == 1


def test_bucketing_reduces_padding():
    sources, targets = _pairs(400, seed=1)
    padding = {}
    for pool in (0, 8):
        b = TranslationBatches(sources, targets, batch_size=8, pad_token_id=0, pool_batches=pool)
        padding[pool] = sum((b.next_batch()["attention_mask"] == 0).sum()
                            for _ in range(b.steps_per_epoch))
    assert padding[8] < padding[0] / 2


def test_truncation_keeps_eos():
    batches = TranslationBatches([[5, 6, 7, 8, 2], [5, 2]], [[9, 9, 9, 2], [9, 2]], 2, 0,
                                 max_source_length=3, max_target_length=2, eos_token_id=2)
    rows = sorted(_rows(batches.next_batch()))
    assert rows == [((5, 2), (9, 2)), ((5, 6, 2), (9, 2))]
    plain = TranslationBatches([[5, 6, 7, 8]], [[9, 9, 9]], 1, 0, max_source_length=3)
    assert _rows(plain.next_batch()) == [((5, 6, 7), (9, 9, 9))]


@pytest.mark.parametrize("pool_batches", [0, 2])
def test_batches_resume_exactly(pool_batches):
    sources, targets = _pairs()

    def make(seed=7):
        return TranslationBatches(sources, targets, 5, 0, seed=seed, pool_batches=pool_batches)

    a = make()
    for _ in range(7):                        # past the end of the first epoch (5 steps)
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(9)]
    b = make(seed=99)
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    # the same seed gives the same epoch; another seed another
    def epoch(batches):
        return [_rows(batches.next_batch()) for _ in range(batches.steps_per_epoch)]
    assert epoch(make()) == epoch(make()) != epoch(make(seed=8))


def test_batches_reject_bad_input():
    with pytest.raises(ValueError, match="same length; got 2 and 1"):
        TranslationBatches([[1], [2]], [[1]], 1, 0)
    with pytest.raises(ValueError, match=r"target_ids\[1\] must be a non-empty"):
        TranslationBatches([[1], [2]], [[1], []], 1, 0)
    with pytest.raises(ValueError, match="negative id"):
        TranslationBatches([[1, -100]], [[1]], 1, 0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        TranslationBatches([[1]], [[1]], 0, 0)
    with pytest.raises(ValueError, match="no pairs"):
        TranslationBatches([], [], 1, 0)
    b = TranslationBatches([[1]], [[1]], 1, 0)
    with pytest.raises(ValueError, match="state is of 2 pairs"):
        b.load_state_dict(dict(TranslationBatches([[1], [2]], [[1], [2]], 1, 0).state_dict()))
