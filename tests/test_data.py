"""Data: the built-in corpus, token files, causal-LM windows, MLM and NSP batches."""

import numpy as np
import pytest

from scratchlm.data import (
    BertPretrainingBatches, CausalLMBatches, builtin_corpus, builtin_documents, mask_tokens,
    read_token_file, token_dtype, train_val_split, write_token_file,
)


def test_builtin_corpus_is_deterministic_and_large():
    text = builtin_corpus()
    assert len(text) > 400_000 and text == builtin_corpus()
    assert len(builtin_documents()) > 50
    train, val = train_val_split(text, 0.1)
    assert train + val == text
    assert 0.09 < len(val) / len(text) < 0.11 and train.endswith("\n")
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(text, 1.5)


@pytest.mark.parametrize("vocab_size, dtype", [(256, np.uint16), (65536, np.uint16),
                                               (65537, np.uint32)])
def test_token_files_round_trip_as_memory_maps(tmp_path, vocab_size, dtype):
    ids = np.random.default_rng(0).integers(0, vocab_size, 1000)
    path = str(tmp_path / "train.bin")
    write_token_file(path, ids, vocab_size)
    back = read_token_file(path)
    assert token_dtype(vocab_size) == dtype and back.dtype == dtype
    assert isinstance(back, np.memmap)
    np.testing.assert_array_equal(back, ids)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 256\)"):
        write_token_file(path, [0, 300], 256)


def test_truncated_token_file_is_reported(tmp_path):
    path = tmp_path / "t.bin"
    write_token_file(str(path), np.arange(100), 256)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="truncated"):
        read_token_file(str(path))


def test_causal_batches_are_windows_of_the_stream_and_resume():
    tokens = np.arange(500)
    batches = CausalLMBatches(tokens, 16, 4, seed=3)
    b = batches.next_batch()
    assert b["input_ids"].shape == (4, 16) and b["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(np.diff(b["input_ids"], axis=1), 1)   # contiguous windows
    np.testing.assert_array_equal(b["labels"], b["input_ids"])          # shifted in the model
    state = batches.state_dict()
    after = batches.next_batch()["input_ids"]
    batches.load_state_dict(state)
    np.testing.assert_array_equal(batches.next_batch()["input_ids"], after)
    with pytest.raises(ValueError, match="block_size"):
        CausalLMBatches(np.arange(10), 16, 4)


def test_mask_tokens_follows_the_80_10_10_rule():
    rng = np.random.default_rng(0)
    V, MASK = 1000, 3
    ids = rng.integers(10, V, (400, 500))
    special = np.zeros(ids.shape, dtype=bool)
    special[:, 0] = special[:, -50:] = True             # [CLS] and padding never chosen
    inputs, labels = mask_tokens(ids, special, rng, mask_token_id=MASK, vocab_size=V)
    chosen = labels != -100
    n = (~special).sum()
    # 5-sigma bounds for binomial counts: these can't flake.
    def within(count, total, p):
        return abs(count - total * p) < 5 * np.sqrt(total * p * (1 - p))
    assert not chosen[special].any()
    assert within(chosen.sum(), n, 0.15)
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    masked = chosen & (inputs == MASK)
    unchanged = chosen & (inputs == ids)
    assert within(masked.sum(), chosen.sum(), 0.8)
    # a random replacement can hit the original id (1/V of the time): count those as random
    random = chosen & ~masked & ~unchanged
    assert within(random.sum(), chosen.sum(), 0.1 * (1 - 1 / V))
    assert within(unchanged.sum(), chosen.sum(), 0.1 + 0.1 / V)
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])     # nothing else changes


class _Tok:
    """The few attributes BertPretrainingBatches reads from a WordPiece tokenizer."""

    pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 1, 2, 3, 4
    all_special_ids = [0, 1, 2, 3, 4]
    vocab_size = 1000


def test_bert_pretraining_batches_pair_segments_and_mask():
    rng = np.random.default_rng(1)
    # Document d holds ids d*100 + 10 .. : a segment's document can be read off its ids.
    docs = [list(range(d * 100 + 10, d * 100 + 10 + int(rng.integers(20, 80))))
            for d in range(8)]
    batches = BertPretrainingBatches(docs, _Tok(), max_length=32, batch_size=256, seed=0,
                                     mlm_probability=0.0)
    b = batches.next_batch()
    ids, types, att, nsp = (b["input_ids"], b["token_type_ids"], b["attention_mask"],
                            b["next_sentence_label"])
    assert ids.shape == (256, 32) and (b["labels"] == -100).all()     # no masking at p=0
    assert abs(nsp.mean() - 0.5) < 5 * np.sqrt(0.25 / 256)
    for i in range(256):
        n = att[i].sum()
        row = ids[i, :n]
        seps = np.flatnonzero(row == 3)
        assert row[0] == 2 and len(seps) == 2 and seps[1] == n - 1
        a, bb = row[1:seps[0]], row[seps[0] + 1:n - 1]
        assert len(a) and len(bb)
        np.testing.assert_array_equal(types[i, :n], np.r_[np.zeros(seps[0] + 1),
                                                          np.ones(n - seps[0] - 1)])
        assert (ids[i, n:] == 0).all() and (att[i, n:] == 0).all()
        same_doc = a[0] // 100 == bb[0] // 100
        if nsp[i] == 0:                                 # is next: B continues A
            assert same_doc and bb[0] == a[-1] + 1
        else:
            assert not same_doc


def test_bert_pretraining_batches_mask_only_real_tokens_and_resume():
    docs = [list(range(10 + 50 * d, 50 + 50 * d)) for d in range(6)]
    batches = BertPretrainingBatches(docs, _Tok(), max_length=24, batch_size=64, seed=5)
    state = batches.state_dict()
    b = batches.next_batch()
    chosen = b["labels"] != -100
    special = np.isin(b["labels"], _Tok.all_special_ids)
    assert chosen.any() and not special[chosen].any()
    assert (b["attention_mask"][chosen] == 1).all()
    batches.load_state_dict(state)
    again = batches.next_batch()
    for k in b:
        np.testing.assert_array_equal(again[k], b[k])
    with pytest.raises(ValueError, match="two documents"):
        BertPretrainingBatches([[10, 11, 12]], _Tok(), 24, 4)
