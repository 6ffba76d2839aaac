"""Training callbacks for retrained IMP flows (:func:`rganalysis.compute_flow` with ``rescaling="rewind",
train=...``) and the response Jacobian (:func:`rganalysis.response_jacobian`): one masked training loop
(:mod:`~rganalysis.train.masked`), BERT-family models on generated token tasks
(:mod:`~rganalysis.train.bert`, :mod:`~rganalysis.train.text_tasks`), a family of residual CNNs on digits
(:mod:`~rganalysis.train.resnets`), and the retrained flow of a model (:mod:`~rganalysis.train.flows`)."""

from rganalysis.train.bert import bert_prunable, bert_trainer, minilm_classifier, tiny_bert
from rganalysis.train.flows import retrained_flow
from rganalysis.train.masked import MaskedTrainer, accuracy, train_masked
from rganalysis.train.resnets import DigitsResNet, digits_resnet, resnet_prunable
from rganalysis.train.text_tasks import TEXT_TASKS, TextTask, TokenVocab, make_text_tasks

__all__ = [
    "TEXT_TASKS",
    "DigitsResNet",
    "MaskedTrainer",
    "TextTask",
    "TokenVocab",
    "accuracy",
    "bert_prunable",
    "bert_trainer",
    "digits_resnet",
    "make_text_tasks",
    "minilm_classifier",
    "resnet_prunable",
    "retrained_flow",
    "tiny_bert",
    "train_masked",
]
