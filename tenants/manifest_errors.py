"""Messages for the manifest problems that pydantic reports in its own words.

Pydantic's default text, such as "Input should be a valid number, unable to parse string as a
number", names neither the value given nor the fix. `describe_error` rewrites each error type
that a manifest can produce into one line that quotes the value (except for secrets) and gives
what to write, using the field's own checks (its range, its allowed values, its sections'
fields) so that the message stays true when a field changes.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

# Fields whose values a message never quotes.
SECRET_FIELDS = {"webhook_secret"}

# Field patterns in words, by regular expression; `tenants.manifest` adds its own.
PATTERN_RULES: dict[str, str] = {}

# How to write a section that was given as a plain value, by section model name. A section
# without an entry gets the list of its fields.
_SECTION_FORMS = {
    "Holiday": "write each holiday as `- date: 2026-12-25`, with an optional "
    "`name: Christmas Day` on the next line",
}

# The unit of a number field, from the end of its name, with an example value.
_UNITS = (
    ("_hours", "a number of hours, such as 48"),
    ("_seconds", "a number of seconds, such as 30"),
    ("_per_minute", "a number per minute, such as 60"),
    ("_percent", "a percentage, such as 80"),
)

_NUMBER_TYPES = {
    "float_parsing",
    "float_type",
    "int_parsing",
    "int_type",
    "int_from_float",
    "finite_number",
}
_RANGE_TYPES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def describe_error(
    item: ErrorDetails, model: type[BaseModel], written: tuple[str, str] | None = None
) -> str:
    """Return the message for one pydantic error of a manifest validated as `model`.

    `written` is the text of the value as the YAML file wrote it and what YAML read it as,
    such as ("012", "a number"), when YAML did not read it as text.
    """
    kind = item["type"]
    location = tuple(item["loc"])
    value = item.get("input")
    name = next((part for part in reversed(location) if isinstance(part, str)), "")
    info = _field_at(model, location)
    if kind == "extra_forbidden":
        return _unknown_field(model, location)
    if kind == "missing":
        return "required field is missing"
    if name in SECRET_FIELDS:
        return item["msg"]
    if kind == "string_type":
        return _not_text(value, written)
    if kind in _NUMBER_TYPES:
        return f"{_shown(value)} is not a number; write {_number_form(name, info)}"
    if kind in _RANGE_TYPES:
        return f"{_shown(value)} is out of range; write {_number_form(name, info)}"
    if kind == "literal_error":
        return _not_allowed(value, info)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _not_a_section(value, item, info)
    if kind == "list_type":
        return _not_a_list(value)
    if kind in ("bool_type", "bool_parsing"):
        return f"{_shown(value)} is not true or false; write true or false"
    if kind == "string_pattern_mismatch":
        pattern = (item.get("ctx") or {}).get("pattern", "")
        rule = PATTERN_RULES.get(pattern, f"match the pattern {pattern}")
        return f"{_shown(value)} is not valid; {rule}"
    message = item["msg"]
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        message += f"; got {_shown(value)}"
    return message


def _shown(value: Any) -> str:
    """Return `value` as a message quotes it, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number_form(name: str, info: FieldInfo | None) -> str:
    """Return what to write in a number field, such as `a number of hours greater than 0`."""
    form = next((text for suffix, text in _UNITS if name.endswith(suffix)), "a number")
    if info is not None and _unwrap(info.annotation) is int:
        form = form.replace("a number", "a whole number")
    limits = _limits(info)
    if not limits:
        return form
    if ", such as" in form:
        base, example = form.split(", such as", 1)
        return f"{base} {limits}, such as{example}"
    return f"{form} {limits}"


def _limits(info: FieldInfo | None) -> str:
    """Return a field's numeric range in words, such as `greater than 0 and at most 8760`."""
    if info is None:
        return ""
    words = []
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Gt):
            words.append(f"greater than {rule.gt:g}")
        elif isinstance(rule, annotated_types.Ge):
            words.append(f"at least {rule.ge:g}")
        elif isinstance(rule, annotated_types.Lt):
            words.append(f"less than {rule.lt:g}")
        elif isinstance(rule, annotated_types.Le):
            words.append(f"at most {rule.le:g}")
    return " and ".join(words)


def _not_text(value: Any, written: tuple[str, str] | None) -> str:
    if written is not None:
        text, read_as = written
        return (
            f"YAML read {text} as {read_as} ({_shown(value)}), but this field is text; "
            f"quote it: '{text}'"
        )
    if isinstance(value, bool | int | float):
        return f"expected text, got {_shown(value)}; quote the value in the YAML file"
    return f"expected text, got {_shown(value)}"


def _not_allowed(value: Any, info: FieldInfo | None) -> str:
    allowed = _literal_values(info.annotation) if info is not None else []
    if not allowed:
        return f"{_shown(value)} is not an allowed value"
    message = f"{_shown(value)} is not allowed; use one of {', '.join(map(str, allowed))}"
    if isinstance(value, str):
        same = [a for a in allowed if isinstance(a, str) and a.casefold() == value.casefold()]
        if same:
            message += f" (case matters: write {same[0]})"
    return message


def _not_a_section(value: Any, item: ErrorDetails, info: FieldInfo | None) -> str:
    section = (item.get("ctx") or {}).get("class_name") or _model_name(info)
    form = _SECTION_FORMS.get(section or "")
    if form is None:
        model = _section_model(info)
        fields = ", ".join(model.model_fields) if model is not None else ""
        form = (
            f"write it as `field: value` lines with the fields {fields}"
            if fields
            else "write it as `key: value` lines"
        )
    return f"expected a mapping of fields, got {_shown(value)}; {form}"


def _not_a_list(value: Any) -> str:
    if isinstance(value, str) and "," in value:
        items = ", ".join(part.strip() for part in value.split(","))
        return f"expected a list, got the text {_shown(value)}; write it as [{items}]"
    return f"expected a list, got {_shown(value)}; write it as [a, b] or one `- item` per line"


def _unknown_field(model: type[BaseModel], location: tuple[Any, ...]) -> str:
    message = "unknown field; check the spelling against docs/manifest.md"
    parent = _model_at(model, location[:-1])
    key = location[-1] if location else None
    if parent is None or not isinstance(key, str):
        return message
    known = list(parent.model_fields)
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
    if not close and len(key) >= 3:
        close = [name for name in known if name.startswith(key)][:2]
    if close:
        message += f"; did you mean {' or '.join(close)}?"
    return message


# --- finding a field's model from an error's location ------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """Return the annotation inside `Annotated[...]` and `X | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _step(annotation: Any, part: Any) -> Any:
    """Return the annotation of item `part` (a list index or a map key) inside `annotation`."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin is list and isinstance(part, int):
        return get_args(annotation)[0]
    if origin is dict:
        return get_args(annotation)[1]
    return None


def _walk_to(model: type[BaseModel], location: tuple[Any, ...]) -> tuple[Any, FieldInfo | None]:
    """Return the annotation at `location` and the model field it ends in (None when it ends
    in a list item or a map value). The annotation is None when the location leaves the
    models, such as inside a value of type `Any`."""
    annotation: Any = model
    info = None
    for part in location:
        current = _unwrap(annotation)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            info = current.model_fields.get(part)
            annotation = info.annotation if info is not None else None
        else:
            info = None
            annotation = _step(annotation, part)
        if annotation is None:
            return None, None
    return annotation, info


def _field_at(model: type[BaseModel], location: tuple[Any, ...]) -> FieldInfo | None:
    """Return the model field that `location` ends in, or None when it ends inside a value."""
    return _walk_to(model, location)[1]


def _model_at(model: type[BaseModel], location: tuple[Any, ...]) -> type[BaseModel] | None:
    """Return the section model at `location`, such as `ServiceSpec` at ("services", 3)."""
    current = _unwrap(_walk_to(model, location)[0])
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _section_model(info: FieldInfo | None) -> type[BaseModel] | None:
    if info is None:
        return None
    annotation = _unwrap(info.annotation)
    if get_origin(annotation) is list:
        annotation = _unwrap(get_args(annotation)[0])
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _model_name(info: FieldInfo | None) -> str | None:
    model = _section_model(info)
    return model.__name__ if model is not None else None


def _literal_values(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    return list(get_args(annotation)) if get_origin(annotation) is Literal else []
