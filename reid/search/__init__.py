"""Gallery search: the exact k nearest gallery features of each query (memory-bounded) and FAISS indexes
(exact or approximate) for galleries of millions; ``python -m reid.tools.search``.

``reid.search.faiss_index`` needs the optional extra ``reid[faiss]`` and is not imported here.
"""

from reid.search.exact import TopK, exact_top_k

__all__ = ["TopK", "exact_top_k"]
