"""Keeps a 100,000-node linked list alive across collections, then walks it."""

from sdk import proxywasm
from sdk.types import PluginContext, VMContext


class Node:
    def __init__(self, value: int, rest: "Node | None") -> None:
        self.value = value
        self.rest = rest


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.head: Node | None = None

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        for i in range(100_000):
            self.head = Node(i, self.head)
        return True

    def on_tick(self) -> None:
        total = 0
        count = 0
        node = self.head
        while node is not None:
            total += node.value
            count += 1
            node = node.rest
        garbage = [str(i) for i in range(20_000)]
        proxywasm.log_info(f"{count} {total} {len(garbage)}")


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
