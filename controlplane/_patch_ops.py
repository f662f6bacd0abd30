"""The operations EnvoyFilter patches perform on protobuf messages and lists of them.

`merge` is protobuf merge as istiod applies it: scalars replaced, messages merged field by
field, lists appended (or replaced for MERGE_AND_REPLACE_LIST), maps merged by key, a oneof
switched to the patch's member, and an Any holding the same type on both sides merged inside
(so a patch can change one field of a filter's `typed_config`). `patch_list` does the list
operations (ADD, INSERT_FIRST/BEFORE/AFTER, REMOVE, REPLACE, MERGE) on named entries.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane._protos import pack, unpack

MERGES = ("MERGE", "MERGE_AND_REPLACE_LIST")


def merge(dst: Message, src: Message, replace_lists: bool = False) -> None:
    """Merge `src` into `dst` in place (see the module docstring for the rules)."""
    if isinstance(dst, any_pb2.Any) and isinstance(src, any_pb2.Any):
        if dst.type_url == src.type_url and dst.type_url:
            inner = unpack(dst)
            merge(inner, unpack(src), replace_lists)
            dst.CopyFrom(pack(inner))
        else:
            dst.CopyFrom(src)
        return
    for descriptor, value in src.ListFields():
        target = getattr(dst, descriptor.name)
        if descriptor.is_repeated:
            if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
                for key in value:
                    if descriptor.message_type.fields_by_name["value"].message_type is not None:
                        merge(target[key], value[key], replace_lists)
                    else:
                        target[key] = value[key]
                continue
            if replace_lists:
                del target[:]
            target.extend(value)
        elif descriptor.message_type is not None:
            oneof = descriptor.containing_oneof
            if oneof is not None and dst.WhichOneof(oneof.name) != descriptor.name:
                target.CopyFrom(value)
            else:
                merge(target, value, replace_lists)
        else:
            setattr(dst, descriptor.name, value)


def clone(msg: Message) -> Any:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def patch_list(items: MutableSequence[Any], operation: str, value: Message | None,
               matches: Callable[[Any], bool], has_target: bool) -> None:
    """One list operation on `items` in place; `matches` picks the target entries when `has_target`.

    Without a target, INSERT_BEFORE puts the value first and INSERT_AFTER last (istiod's reading)."""
    indexes = [i for i, item in enumerate(items) if matches(item)] if has_target else []
    if operation in ("ADD", "INSERT_FIRST", "INSERT_BEFORE", "INSERT_AFTER", "REPLACE") and value is None:
        raise ValueError(f"operation {operation} needs a value")
    if operation == "ADD":
        items.append(clone(value))
    elif operation == "INSERT_FIRST":
        items.insert(0, clone(value))
    elif operation in ("INSERT_BEFORE", "INSERT_AFTER"):
        if not has_target:
            items.insert(0 if operation == "INSERT_BEFORE" else len(items), clone(value))
        elif indexes:
            position = indexes[0] if operation == "INSERT_BEFORE" else indexes[-1] + 1
            items.insert(position, clone(value))
    elif operation == "REMOVE":
        for i in reversed(indexes):
            del items[i]
    elif operation == "REPLACE":
        for i in indexes:
            items[i].CopyFrom(value)
    elif operation in MERGES:
        for i in indexes:
            merge(items[i], value, replace_lists=operation == "MERGE_AND_REPLACE_LIST")


__all__ = ["MERGES", "clone", "merge", "patch_list"]
