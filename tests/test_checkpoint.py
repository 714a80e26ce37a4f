"""Checkpoints: from_pretrained / save_pretrained and the Hugging Face name table.

No torch needed: Hugging Face directories are made with our own writer, or
by hand where a test needs a file our writer would never produce. The
comparison with transformers itself is in test_hf_parity.py.
"""

import gc
import json
import warnings

import numpy as np
import pytest

import scratchlm
from scratchlm import checkpoint
from scratchlm.models import (
    GPT, BertConfig, BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining,
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    BertModel, GPTConfig,
)
from scratchlm.safetensors_io import read_safetensors, write_safetensors

V, B, T, C = 37, 2, 6, 12

BERT_CLASSES = [BertModel, BertForPreTraining, BertForMaskedLM, BertForNextSentencePrediction,
                BertForSequenceClassification, BertForTokenClassification,
                BertForQuestionAnswering]
CLASSES = [GPT] + BERT_CLASSES


def gpt_config():
    return GPTConfig(vocab_size=V, n_positions=8, n_embd=C, n_layer=2, n_head=3,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                     eos_token_id=1)


def bert_config(num_labels=3):
    return BertConfig(vocab_size=V, hidden_size=C, num_hidden_layers=2, num_attention_heads=3,
                      intermediate_size=20, max_position_embeddings=8, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0,
                      id2label={i: f"tag{i}" for i in range(num_labels)})


def make_model(cls, dtype="float32", seed=0):
    """A tiny model whose every parameter (biases, LayerNorm scales too) is random."""
    model = cls(gpt_config() if cls is GPT else bert_config(), seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for p in model.parameters():
        p.data[...] = p.data + 0.1 * rng.standard_normal(p.shape)
    return model.eval()


def batch(cls):
    rng = np.random.default_rng(7)
    ids = rng.integers(1, V, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    if cls is GPT:
        mask[1, :2] = 0
        return dict(input_ids=ids, attention_mask=mask)
    mask[1, 4:] = 0
    types = np.zeros((B, T), dtype=np.int64)
    types[:, 3:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def outputs(model, cls):
    out = model(**batch(cls))
    return {k: scratchlm.to_numpy(v) for k, v in vars(out).items() if v is not None}


def assert_same_parameters(a, b):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert list(pa) == list(pb)
    for name in pa:
        assert pa[name].dtype == pb[name].dtype, name
        np.testing.assert_array_equal(pb[name].data, pa[name].data, err_msg=name)


def save(model, directory):
    model.save_pretrained(directory)
    return directory


def rewrite(directory, change):
    """Apply change(tensors) -> tensors to the checkpoint's tensors, in place."""
    path = directory / "model.safetensors"
    write_safetensors(path, change(read_safetensors(path)), metadata={"format": "pt"})


# --- round trips ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_round_trip_gives_identical_parameters_and_outputs(cls, dtype, tmp_path):
    model = make_model(cls, dtype)
    save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # nothing initialised, nothing unused
        loaded = cls.from_pretrained(tmp_path)
    assert type(loaded) is cls and not loaded.training
    assert loaded.dtype == np.dtype(dtype)
    assert loaded.config == model.config
    assert_same_parameters(model, loaded)
    for name, value in outputs(model, cls).items():
        np.testing.assert_array_equal(outputs(loaded, cls)[name], value, err_msg=name)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_saved_files_have_hugging_face_names_and_config(cls, tmp_path):
    model = make_model(cls, "float64")
    save(model, tmp_path)
    tensors = read_safetensors(tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    architecture = "GPT2LMHeadModel" if cls is GPT else cls.__name__
    assert config["architectures"] == [architecture]
    assert config["model_type"] == ("gpt2" if cls is GPT else "bert")
    assert config["dtype"] == "float64"
    assert all(a.dtype == np.float64 for a in tensors.values())
    # tied tensors are written once, under the embedding's name
    assert not any(n.endswith(("lm_head.weight", "decoder.weight", "decoder.bias"))
                   for n in tensors)
    assert sum(p.size for p in model.parameters()) == sum(a.size for a in tensors.values())
    if cls is GPT:
        assert all(n.startswith("transformer.") for n in tensors)
        W = tensors["transformer.h.0.attn.c_attn.weight"]       # Conv1D: (in, out), as ours
        np.testing.assert_array_equal(W, model.h[0].attn.c_attn.weight.data)
        return
    prefix = "" if cls is BertModel else "bert."
    body = model if cls is BertModel else model.bert
    attn = body.encoder.layer[1].attn
    q, k, v = (tensors[f"{prefix}encoder.layer.1.attention.self.{part}.weight"]
               for part in ("query", "key", "value"))
    assert q.shape == (C, C)                                    # Linear: (out, in)
    np.testing.assert_array_equal(np.concatenate([q.T, k.T, v.T], axis=1),
                                  attn.c_attn.weight.data)
    bias = [tensors[f"{prefix}encoder.layer.1.attention.self.{p}.bias"]
            for p in ("query", "key", "value")]
    np.testing.assert_array_equal(np.concatenate(bias), attn.c_attn.bias.data)
    np.testing.assert_array_equal(tensors[f"{prefix}encoder.layer.1.output.dense.weight"].T,
                                  body.encoder.layer[1].mlp.c_proj.weight.data)
    has_pooler = cls in (BertModel, BertForPreTraining, BertForNextSentencePrediction,
                         BertForSequenceClassification)
    assert (f"{prefix}pooler.dense.weight" in tensors) == has_pooler


def test_hf_state_dict_converts_gradients_too():
    model = make_model(BertForMaskedLM, "float64")
    grads = {n: np.full(p.shape, i, dtype=np.float64)
             for i, (n, p) in enumerate(model.named_parameters())}
    hf = checkpoint.hf_state_dict(model, grads)
    assert set(hf) == set(checkpoint.hf_state_dict(model))
    i = list(grads).index("bert.encoder.layer.0.attn.c_attn.weight")
    assert (hf["bert.encoder.layer.0.attention.self.key.weight"] == i).all()


def test_sharded_checkpoint_loads(tmp_path):
    model = make_model(GPT)
    save(model, tmp_path)
    tensors = read_safetensors(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        write_safetensors(tmp_path / shard, {k: tensors[k] for k in keys})
    index = {"metadata": {}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same_parameters(model, GPT.from_pretrained(tmp_path))


# --- dtypes --------------------------------------------------------------------

def bfloat16_bits(a):
    """float32 -> bfloat16 bit patterns (round to nearest even), as uint16."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    bits += 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).astype(np.uint16)


def write_bf16(path, tensors):
    """A safetensors file of BF16 tensors, by hand (our writer has no BF16)."""
    header, offset, chunks = {"__metadata__": {"format": "pt"}}, 0, []
    for name, bits in tensors.items():
        raw = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(bits.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(chunks))


def test_float16_checkpoint_loads_as_float32(tmp_path):
    model = make_model(BertForSequenceClassification, "float64")
    save(model, tmp_path)
    rewrite(tmp_path, lambda t: {k: a.astype(np.float16) for k, a in t.items()})
    loaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.dtype == np.float32
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(q.data, p.data.astype(np.float16).astype(np.float32),
                                      err_msg=name)
    as64 = BertForSequenceClassification.from_pretrained(tmp_path, dtype="float64")
    assert as64.dtype == np.float64


def test_bfloat16_checkpoint_loads_as_float32(tmp_path):
    model = make_model(GPT, "float32")
    save(model, tmp_path)
    tensors = read_safetensors(tmp_path / "model.safetensors")
    write_bf16(tmp_path / "model.safetensors", {k: bfloat16_bits(a) for k, a in tensors.items()})
    loaded = GPT.from_pretrained(tmp_path)
    assert loaded.dtype == np.float32
    W = model.wte.weight.data
    widened = (bfloat16_bits(W).astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(loaded.wte.weight.data, widened)
    assert np.abs(loaded.wte.weight.data - W).max() <= 2 ** -8 * np.abs(W).max()


def test_dtype_argument_is_checked(tmp_path):
    save(make_model(GPT), tmp_path)
    assert GPT.from_pretrained(tmp_path, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="floating"):
        GPT.from_pretrained(tmp_path, dtype="int32")


# --- heads: initialised and reported, unused and reported ------------------------

def test_base_checkpoint_into_classifier_initialises_and_reports_the_head(tmp_path):
    base = make_model(BertModel)
    save(base, tmp_path)
    with pytest.warns(UserWarning, match=r"classifier\.weight, classifier\.bias") as record:
        model = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert len(record) == 1 and "fresh initialisation" in str(record[0].message)
    assert model.classifier.weight.shape == (C, 4) and model.config.num_labels == 4
    assert_same_parameters(base, model.bert)


def test_task_checkpoint_into_base_reports_unused_head(tmp_path):
    pre = make_model(BertForPreTraining)
    save(pre, tmp_path)
    with pytest.warns(UserWarning, match="not used by BertModel") as record:
        base = BertModel.from_pretrained(tmp_path)
    message = str(record[0].message)
    assert "cls.predictions.transform.dense.weight" in message
    assert "cls.seq_relationship.bias" in message
    assert_same_parameters(pre.bert, base)


def test_masked_lm_checkpoint_into_classifier(tmp_path):
    save(make_model(BertForMaskedLM), tmp_path)
    with pytest.warns(UserWarning) as record:
        BertForTokenClassification.from_pretrained(tmp_path)      # no pooler on either side
    assert [("classifier.weight" in str(r.message), "cls.predictions.bias" in str(r.message))
            for r in record] == [(True, False), (False, True)]
    with pytest.warns(UserWarning) as record:
        BertForSequenceClassification.from_pretrained(tmp_path)  # the pooler is new too
    assert "bert.pooler.dense.weight" in str(record[0].message)
    assert "classifier.bias" in str(record[0].message)
    assert "cls.predictions.bias" in str(record[1].message)


def test_num_labels_mismatch_is_a_shape_error_with_a_hint(tmp_path):
    save(make_model(BertForSequenceClassification), tmp_path)      # 3 labels
    with pytest.raises(ValueError, match=r"classifier\.weight.*\(5, 12\).*\(3, 12\).*num_labels"):
        BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)


def test_num_labels_is_not_for_gpt(tmp_path):
    save(make_model(GPT), tmp_path)
    with pytest.raises(ValueError, match="num_labels"):
        GPT.from_pretrained(tmp_path, num_labels=3)


# --- names transformers may write -------------------------------------------------

def test_prefixes_buffers_tied_and_legacy_names_are_accepted(tmp_path):
    model = make_model(BertForMaskedLM)
    save(model, tmp_path)

    def legacy(tensors):
        out = {}
        for name, a in tensors.items():
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma")
            out[name.replace("LayerNorm.bias", "LayerNorm.beta")] = a
        out["bert.embeddings.position_ids"] = np.arange(8)[None]          # a buffer
        out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"]
        out["cls.predictions.decoder.bias"] = out.pop("cls.predictions.bias")
        return out

    rewrite(tmp_path, legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_parameters(model, BertForMaskedLM.from_pretrained(tmp_path))


def test_gpt_without_prefix_with_lm_head_and_buffers(tmp_path):
    model = make_model(GPT)
    save(model, tmp_path)

    def gpt2model_style(tensors):
        out = {k[len("transformer."):]: a for k, a in tensors.items()}
        out["lm_head.weight"] = out["wte.weight"]
        for i in range(2):
            out[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), dtype=np.uint8))
            out[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
        return out

    rewrite(tmp_path, gpt2model_style)
    assert_same_parameters(model, GPT.from_pretrained(tmp_path))


def test_untied_lm_head_is_refused(tmp_path):
    save(make_model(GPT), tmp_path)
    rewrite(tmp_path, lambda t: {**t, "lm_head.weight": t["transformer.wte.weight"] + 1})
    with pytest.raises(ValueError, match=r"'lm_head\.weight' differs from 'transformer\.wte"):
        GPT.from_pretrained(tmp_path)


# --- errors ----------------------------------------------------------------------

def test_missing_unexpected_and_mis_shaped_tensors_in_one_error(tmp_path):
    save(make_model(BertForSequenceClassification), tmp_path)

    def damage(t):
        del t["bert.encoder.layer.1.attention.self.key.weight"]
        del t["bert.embeddings.LayerNorm.bias"]
        t["bert.encoder.layer.0.attention.extra.weight"] = np.zeros(3, np.float32)
        t["bert.encoder.layer.0.intermediate.dense.weight"] = \
            t["bert.encoder.layer.0.intermediate.dense.weight"].T.copy()
        return t

    rewrite(tmp_path, damage)
    with pytest.raises(ValueError) as info:
        BertForSequenceClassification.from_pretrained(tmp_path)
    message = str(info.value)
    for part in ("missing (2): bert.embeddings.LayerNorm.bias, "
                 "bert.encoder.layer.1.attention.self.key.weight",
                 "unexpected (1): bert.encoder.layer.0.attention.extra.weight",
                 "'bert.encoder.layer.0.intermediate.dense.weight': expected (20, 12), "
                 "got (12, 20) (saved transposed?)",
                 str(tmp_path / "model.safetensors")):
        assert part in message, message


def test_partly_missing_head_is_an_error_not_an_initialisation(tmp_path):
    save(make_model(BertForQuestionAnswering), tmp_path)
    rewrite(tmp_path, lambda t: {k: a for k, a in t.items() if k != "qa_outputs.bias"})
    with pytest.raises(ValueError, match=r"missing \(1\): qa_outputs\.bias"):
        BertForQuestionAnswering.from_pretrained(tmp_path)


def test_pickle_checkpoint_is_refused(tmp_path):
    save(make_model(GPT), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="pickle"):
        GPT.from_pretrained(tmp_path)


def test_missing_directory_and_config_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nowhere")):
        GPT.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=str(tmp_path / "config.json")):
        GPT.from_pretrained(tmp_path)


def test_wrong_model_type_names_the_config(tmp_path):
    save(make_model(BertModel), tmp_path)
    with pytest.raises(ValueError, match=r"config\.json.*model_type must be 'gpt2'; got 'bert'"):
        GPT.from_pretrained(tmp_path)


def test_save_into_a_file_path_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        make_model(GPT).save_pretrained(tmp_path / "file")


# --- sizes of the real models ----------------------------------------------------------

def test_parameter_counts_of_gpt2_and_bert_base():
    model = GPT(GPTConfig(), dtype="float32")                 # GPT-2 small, tied head
    assert model.num_parameters() == 124_439_808
    del model
    gc.collect()
    model = BertModel(BertConfig(), dtype="float32")          # bert-base, with the pooler
    assert model.num_parameters() == 109_482_240
    del model
    gc.collect()
