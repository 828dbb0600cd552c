"""422 problems of trading that point at the request field they refuse.

Every 422 of the API is documented as a ``ValidationProblem``, whose ``errors``
list names the offending fields (``loc``), as for malformed requests. Refusals
that only the domain can make (a price off the tick, an expired order, a
signature that is not the maker's) carry the same list, so a client handles
all 422s alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exchange.kit.errors import ValidationFailed


class FieldRefused(ValidationFailed):
    """A well-formed request the domain refuses, because of the field at ``location``."""

    def __init__(
        self,
        detail: str,
        *,
        location: Sequence[str] = ("body",),
        extra: Mapping[str, object] | None = None,
    ) -> None:
        errors = [{"loc": list(location), "msg": detail, "type": self.type_slug}]
        super().__init__(detail, extra={**(extra or {}), "errors": errors})
