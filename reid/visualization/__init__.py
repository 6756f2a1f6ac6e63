"""Pictures of a run, one module per picture, each a PNG.

``ranked_list``: query + top-k gallery rows, frames by match status (``ranking`` chooses the queries and
their top-k from an evaluation's features); ``curves``: CMC and mAP per epoch; ``attention``: [CLS] and
part-token attention of the last ViT block; ``index_html``: the page that shows a pictures folder.
Written by the callback :class:`reid.callbacks.ranked_list.RankedListPictures` and the tool
``python -m reid.tools.visualize``.
"""

from reid.visualization.ranked_list import RankedRow, cell_box, render_ranked_lists

__all__ = ["RankedRow", "cell_box", "render_ranked_lists"]
