"""qa — question answering over a corpus of news articles, French first.

>>> from qa import KnowledgeBase
>>> kb = KnowledgeBase.open("path/to/index")
>>> kb.ingest(["corpus/"])
>>> kb.search("Quand le bureau de l'UE a-t-il ouvert à Almaty ?", k=5)
"""

from qa.config import Settings, load_settings
from qa.documents import Article
from qa.errors import (
    ConfigError,
    DocumentError,
    IndexBusyError,
    IndexMismatchError,
    ModelError,
    NotFoundError,
    QAError,
    QueryError,
    StoreError,
)
from qa.filters import Filters
from qa.kb import KnowledgeBase
from qa.schema import Answer, ArticleMeta, Citation, IngestReport, Passage, Skipped

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "Article",
    "ArticleMeta",
    "Citation",
    "ConfigError",
    "DocumentError",
    "Filters",
    "IndexBusyError",
    "IndexMismatchError",
    "IngestReport",
    "KnowledgeBase",
    "ModelError",
    "NotFoundError",
    "Passage",
    "QAError",
    "QueryError",
    "Settings",
    "Skipped",
    "StoreError",
    "load_settings",
    "__version__",
]
