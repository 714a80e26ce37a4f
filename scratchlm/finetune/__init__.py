"""Fine-tuning: a pre-trained BERT taught a task, from data files to metrics.

An application wing: it sits above the core (models, tokenizers, the
Trainer) and the core never imports it. Three modules, read in this order:

    tasks.py     the task files as the public data sets ship them (CSV/TSV/JSONL
                 classification, CoNLL NER, SQuAD QA), label alignment from
                 words to word pieces, QA windows and answers read back
    trainer.py   the fine-tuning run: features, batches, the Trainer with an
                 evaluation per epoch, the best model kept; prediction
    builtin.py   three tasks made from the built-in corpus, written in those
                 formats, so that fine-tuning runs offline

    scratchlm finetune --task classify|ner|qa --model DIR --train FILE --eval FILE --out DIR
    scratchlm predict --model DIR --text TEXT
"""

from scratchlm.finetune.builtin import write_builtin_tasks
from scratchlm.finetune.tasks import (
    Answer, ClassificationExample, Counts, QAExample, QAFeature, TaggedSentence, TaskDataError,
    align_labels, answer_token_span, best_answers, check_labels, encode_words, label_list,
    ner_label_list, qa_features, read_classification, read_conll, read_squad, split_words,
    write_classification, write_conll, write_squad)
from scratchlm.finetune.trainer import (
    MAIN_METRIC, REPORT_FILE, TASK_OF_ARCHITECTURE, TASKS, EpochTrainer, FeatureBatches,
    FinetuneArguments, FinetuneResult, classification_features, finetune, format_report,
    freeze_encoder, load_for_prediction, load_task_model, load_tokenizer, pad_batch,
    predict_answers, predict_entities, predict_labels, predict_tags, run_model, token_features,
    word_predictions)

__all__ = [
    # the run
    "FinetuneArguments", "FinetuneResult", "finetune", "format_report", "EpochTrainer",
    "TASKS", "TASK_OF_ARCHITECTURE", "MAIN_METRIC", "REPORT_FILE",
    # models and features
    "freeze_encoder", "load_task_model", "load_tokenizer", "load_for_prediction",
    "classification_features", "token_features", "pad_batch", "FeatureBatches", "run_model",
    "word_predictions",
    # prediction
    "predict_labels", "predict_tags", "predict_entities", "predict_answers",
    # task files
    "TaskDataError", "Counts", "ClassificationExample", "TaggedSentence", "QAExample",
    "QAFeature", "Answer", "read_classification", "read_conll", "read_squad",
    "write_classification", "write_conll", "write_squad", "label_list", "ner_label_list",
    "check_labels", "encode_words", "align_labels", "split_words", "answer_token_span",
    "qa_features", "best_answers",
    # built-in tasks
    "write_builtin_tasks",
]
