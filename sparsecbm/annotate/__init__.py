"""Machine concept annotation: concept banks, sentence-embedding scoring, an optional LLM annotator and
concept discovery. ``python -m sparsecbm.annotate data.root=DIR bank=NAME|PATH out_dir=DIR``."""

from sparsecbm.annotate.annotator import AnnotationResult, agreement, annotate_folder
from sparsecbm.annotate.bank import BankConcept, BankError, ConceptBank, load_bank
from sparsecbm.annotate.discover import DiscoveryReport, discover
from sparsecbm.annotate.embed import SentenceEmbedder
from sparsecbm.annotate.llm import LLMScorer, annotate_folder_llm
from sparsecbm.annotate.sentences import split_sentences

__all__ = ["AnnotationResult", "BankConcept", "BankError", "ConceptBank", "DiscoveryReport", "LLMScorer",
           "SentenceEmbedder", "agreement", "annotate_folder", "annotate_folder_llm", "discover", "load_bank",
           "split_sentences"]
