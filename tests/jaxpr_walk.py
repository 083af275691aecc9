"""Walking a jaxpr's nested sub-jaxprs (scan, while, cond bodies), for tests that inspect
what a traced program contains."""

from __future__ import annotations

from typing import Iterator

import jax


def sub_jaxprs(eqn) -> Iterator["jax.extend.core.Jaxpr"]:
    """The jaxprs nested in one equation's params (a scan's body, a while's cond and body...)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item
