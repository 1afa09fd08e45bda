"""Parameters and MACs of registered models at their native input size, as a
Markdown table (exact, from ``operad.cost``; nothing is bound or run).

    .venv/bin/python -m operad.experiments.zoo_table                 # network zoo I
    .venv/bin/python -m operad.experiments.zoo_table --pattern '*'   # every registered model
"""
from __future__ import annotations

import argparse
import fnmatch
from typing import List

import operad
from operad import Field
from operad.models import list_models, model_info, model_term

__all__ = ["ZOO1", "table", "main"]

ZOO1 = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "preact_resnet20", "preact_resnet56",
        "preact_resnet110", "preact_resnet18", "resnet18", "resnet34", "resnet50", "densenet_bc100_k12",
        "densenet121", "hardnet68", "hardnet85", "hardnet68_cifar", "threshnet79", "allcnn_c", "allcnn_c_maxpool"]


def table(names: List[str]) -> str:
    """A Markdown table of ``names``: input size, parameters, MACs."""
    lines = ["| model | input | params | MACs |", "|---|---|---|---|"]
    for n in names:
        i = model_info(n).input_size
        c = operad.cost(model_term(n), Field(i[0]), size=i[1:])
        lines.append(f"| {n} | {i[0]}x{i[1]}x{i[2]} | {c.params:,} | {c.macs:,} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pattern", default=None, help="glob over registered names (default: network zoo I)")
    a = p.parse_args(argv)
    names = list_models(a.pattern) if a.pattern else [n for n in ZOO1 if n in set(list_models())]
    out = table(names)
    print(out)
    return out


if __name__ == "__main__":
    main()
