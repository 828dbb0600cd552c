"""Free text a request may carry into the database: the type of every such API field.

JSON can spell two strings that no column takes. PostgreSQL refuses a NUL character in any
text parameter, and UTF-8 cannot encode a lone surrogate (``"\\ud800"``), so SQLite's driver
and every encoder fail on one. Either would end the request in a 500 at the database; a
field of type :data:`Text` refuses them when the request is read, as a 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError


def storable_text(value: str) -> str:
    """``value`` unchanged if the database can store it; a validation error naming why not."""
    if "\0" in value:
        raise PydanticCustomError("text_nul", "the text holds a NUL character, which is not accepted")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError(
                "text_surrogate", "the text holds an unpaired surrogate: it is not Unicode text"
            ) from None
    return value


def text_refusal(value: str) -> str | None:
    """Why the database cannot store ``value`` (:func:`storable_text`'s reason), or None if it can:
    for text that arrives outside a request model (a CSV cell, a command-line argument)."""
    try:
        storable_text(value)
    except PydanticCustomError as exc:
        return exc.message()
    return None


Text = Annotated[str, AfterValidator(storable_text)]


def _filled(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("text_blank", "the text is blank: it needs more than white space")
    return value


# Text that must say something: white space alone is refused (a name, a reason).
FilledText = Annotated[str, AfterValidator(storable_text), AfterValidator(_filled)]

# Text of at most so many characters, for a field that may also be null (``Note | None``). The
# limit is the string's own, checked before :data:`Text`'s validator: given on the field
# (``Text | None = Field(max_length=…)``) it applies to whatever the union gave, after the
# validator, and pydantic's refusal then counts "items" rather than characters. (With a limit
# of its own, the string is checked as Unicode first: a lone surrogate gets pydantic's refusal,
# ``string_unicode``, as in every text field with a length limit, rather than ``text_surrogate``.)
Note = Annotated[str, StringConstraints(max_length=2000), AfterValidator(storable_text)]
Label = Annotated[str, StringConstraints(max_length=128), AfterValidator(storable_text)]
