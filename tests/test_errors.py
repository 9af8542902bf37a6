"""``app.errors`` documents the whole hierarchy once: the tree in its docstring is the
hierarchy, class for class and code for code."""

from __future__ import annotations

import app.errors
from app.errors import AcmeDelegateError, DomainError


def documented() -> dict[str, tuple[str | None, str]]:
    """Each class of the docstring's tree: its parent there, and the rest of its line."""
    tree: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in (app.errors.__doc__ or "").splitlines():
        if line.startswith("    AcmeDelegateError"):
            depth, rest = 0, line[4:]
        elif "── " in line:
            branch = line.index("── ")
            depth, rest = (branch - 4) // 4 + 1, line[branch + 3:]
        else:
            continue  # prose, or a line continuing the one above
        name, _, said = rest.partition(" ")
        del parents[depth:]
        tree[name] = (parents[-1] if parents else None, said.strip())
        parents.append(name)
    return tree


def defined() -> dict[str, str | None]:
    classes: dict[str, str | None] = {AcmeDelegateError.__name__: None}
    todo: list[type[Exception]] = [AcmeDelegateError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            classes[sub.__name__] = cls.__name__
            todo.append(sub)
    return classes


def test_the_tree_is_the_hierarchy() -> None:
    tree = documented()
    assert {name: parent for name, (parent, _) in tree.items()} == defined()


def test_the_tree_names_each_answers_code() -> None:
    tree = documented()
    for cls in (getattr(app.errors, name) for name in tree if hasattr(app.errors, name)):
        if issubclass(cls, DomainError) and cls is not DomainError:
            assert tree[cls.__name__][1].split()[0].rstrip(":") == cls.code, cls.__name__


def test_codes_are_unique() -> None:
    codes = [getattr(app.errors, name).code for name in defined()
             if issubclass(getattr(app.errors, name, Exception), DomainError)]
    assert len(codes) == len(set(codes))
