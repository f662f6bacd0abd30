"""Classes: fields, defaults, methods, inheritance, super(), virtual dispatch, __str__."""

from sdk.proxywasm import log_info


class Shape:
    sides: int = 0
    KIND = "shape"

    def __init__(self, name: str) -> None:
        self.name = name
        self.tags: list[str] = []

    def area(self) -> int:
        return 0

    def describe(self) -> str:
        return f"{self.name} with {self.sides} sides and area {self.area()}"

    def __str__(self) -> str:
        return f"<{self.KIND} {self.name}>"


class Rect(Shape):
    KIND = "rect"

    def __init__(self, w: int, h: int) -> None:
        super().__init__("rect")
        self.sides = 4
        self.w = w
        self.h = h

    def area(self) -> int:
        return self.w * self.h


class Square(Rect):
    def __init__(self, side: int) -> None:
        super().__init__(side, side)
        self.name = "square"

    def describe(self) -> str:
        return "a square: " + super().describe()


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.history: dict[str, int] = {}

    def bump(self, key: str, by: int = 1) -> int:
        self.count += by
        self.history[key] = self.history.get(key, 0) + by
        return self.count


class Node:
    def __init__(self, value: int, next_node: "Node | None" = None) -> None:
        self.value = value
        self.next_node = next_node


def total(shapes: list[Shape]) -> int:
    result = 0
    for shape in shapes:
        result += shape.area()
    return result


def main() -> None:
    shapes: list[Shape] = [Shape("blob"), Rect(2, 3), Square(4)]
    for shape in shapes:
        log_info(shape.describe())
        log_info(str(shape))
        log_info(f"{shape}")
    log_info(f"total {total(shapes)}")
    log_info(f"{isinstance(shapes[2], Rect)} {isinstance(shapes[0], Rect)} {isinstance(shapes[1], (Square, Shape))}")
    counter = Counter()
    counter.bump("a")
    counter.bump("b", 5)
    counter.bump(by=2, key="a")
    log_info(f"{counter.count} {counter.history['a']} {counter.history['b']}")
    head = Node(1, Node(2, Node(3)))
    values: list[int] = []
    current: Node | None = head
    while current is not None:
        values.append(current.value)
        current = current.next_node
    log_info(f"{values}")
    rect = Rect(1, 1)
    rect.w += 9
    rect.tags.append("wide")
    log_info(f"{rect.area()} {rect.tags} {Rect.KIND} {rect.KIND} {Shape.KIND} {rect.sides}")
    unset_fields()
    same = rect
    log_info(f"{same is rect} {same == rect} {rect is Rect(1, 1)}")


class Forgetful(Shape):
    def __init__(self) -> None:
        self.extra = 1  # never calls super().__init__, so name and tags stay unset


def unset_fields() -> None:
    thing = Forgetful()
    try:
        log_info(thing.name)
    except AttributeError as err:
        log_info(f"attribute error: {err}")
    log_info(f"{thing.extra} {thing.sides}")
