"""JSON Schema (2020-12, as OpenAPI 3.1 uses it) for attrs classes and type annotations.

Covers what fangwire's request and response models use: str, int, float, bool, None, lists,
tuples, sets, mappings with string keys, unions, ``Literal``, enums, ``Any`` and nested attrs
classes (emitted once under ``components/schemas`` and referenced).
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

Schema = dict[str, Any]

_SIMPLE: Mapping[Any, Schema] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
    object: {},
}


class SchemaBuilder:
    """Collects component schemas while converting annotations."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def schema_for(self, tp: Any) -> Schema:
        if isinstance(tp, Mapping):
            return dict(tp)
        if tp in _SIMPLE:
            return dict(_SIMPLE[tp])
        if isinstance(tp, type) and attrs.has(tp):
            return self._component(tp)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [member.value for member in tp]}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [self.schema_for(a) for a in args]}
        if origin in (list, set, frozenset, Sequence) or (origin is tuple and _is_var_tuple(args)):
            item = args[0] if args else Any
            return {"type": "array", "items": self.schema_for(item)}
        if origin is tuple:
            return {
                "type": "array",
                "prefixItems": [self.schema_for(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        if origin in (dict, Mapping) or tp in (dict, Mapping):
            value = args[1] if len(args) == 2 else Any
            return {"type": "object", "additionalProperties": self.schema_for(value)}
        if tp in (list, tuple):
            return {"type": "array"}
        raise TypeError(f"no JSON schema for {tp!r}")

    def _component(self, cls: type[Any]) -> Schema:
        name = cls.__name__
        ref = {"$ref": f"#/components/schemas/{name}"}
        if name in self.components:
            return ref
        self.components[name] = {}  # placeholder: breaks recursion for self-referencing types
        hints = typing.get_type_hints(cls)
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in attrs.fields(cls):
            if field.metadata.get("openapi_exclude"):
                continue
            schema = self.schema_for(hints.get(field.name, Any))
            description = field.metadata.get("description")
            if description:
                schema = {**schema, "description": description}
            properties[field.name] = schema
            if field.default is attrs.NOTHING:
                required.append(field.name)
        component: Schema = {"type": "object", "properties": properties}
        if required:
            component["required"] = required
        doc = (cls.__doc__ or "").strip().split("\n\n", 1)[0]
        if doc:
            component["description"] = " ".join(doc.split())
        self.components[name] = component
        return ref


def _is_var_tuple(args: tuple[Any, ...]) -> bool:
    return len(args) == 2 and args[1] is Ellipsis
