"""`{{ <jmespath> }}` placeholders in step string fields, evaluated over the run context."""

from __future__ import annotations

import json
import re
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

PLACEHOLDER = re.compile(r"\{\{\s*(.+?)\s*\}\}")


class TemplateError(ValueError):
    """A placeholder does not compile or cannot be evaluated."""


def check_expression(expression: str) -> str:
    """Compile a JMESPath expression, raising a readable error when it is invalid."""
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        reason = str(exc).splitlines()[0].rstrip(":")
        raise TemplateError(f"invalid JMESPath expression {expression!r}: {reason}") from exc
    return expression


def check_placeholders(text: str) -> str:
    """Check that every placeholder in `text` compiles."""
    for match in PLACEHOLDER.finditer(text):
        check_expression(match.group(1))
    return text


def search(expression: str, context: dict[str, Any]) -> Any:
    """Evaluate one expression over the run context."""
    try:
        return jmespath.search(expression, context)
    except JMESPathError as exc:
        raise TemplateError(f"cannot evaluate {expression!r}: {exc}") from exc


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render placeholders in every string inside `value` (dicts and lists included).

    A string that is exactly one placeholder takes the value's own type; a placeholder
    inside a longer string is replaced by the value as text (JSON for non-strings).
    """
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value.strip())
        if whole:
            return search(whole.group(1), context)
        return PLACEHOLDER.sub(lambda m: _as_text(search(m.group(1), context)), value)
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
