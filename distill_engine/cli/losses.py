"""`distill-engine losses`: the loss kinds, their exact formulas, plugins and backends."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("losses", help="list the loss kinds and their exact formulas")


def command(_args) -> int:
    from distill_engine.graph import MASKED_FORMULA
    from distill_engine.losses import implemented_on, loss_definitions
    from distill_engine.losses.registry import owner

    for d in loss_definitions().values():
        needs = ", ".join(x for x, on in (("teacher", d.needs_teacher), ("labels", d.needs_labels)) if on)
        print(f"{d.name}\n    {d.summary}: reads {d.reads}{' (' + (d.mapping or 'phase') + ' mapping)' if d.reads in ('attention', 'values', 'hidden') else ''}"
              f"{'; needs ' + needs if needs else ''}; from plugin {owner(d.name)}; "
              f"backends: {', '.join(implemented_on(d.name)) or 'none'}")
        print(f"    {d.formula}")
        for param in d.params:
            print(f"    parameter {param.describe()}")
    print(f"mask_padding\n    {MASKED_FORMULA}")
    return 0
