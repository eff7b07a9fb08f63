"""The query closure of the cache builder: the rule lives in `casdri.closure` (torch-free, also
used by the policies); the canonical query order in `casdri.schema.QUERY_ORDER_RULE`."""
from __future__ import annotations

from casdri.closure import (CLOSURE_RULE, canonical_query, proposal_pool, query_closure,
                            sub_multisets, top_classes)
from casdri.schema import QUERY_ORDER_RULE

__all__ = ["canonical_query", "top_classes", "proposal_pool", "sub_multisets",
           "query_closure", "CLOSURE_RULE", "QUERY_ORDER_RULE"]
