"""Parse the equations ``tinycl cost`` prints and evaluate them with Python arithmetic.

An equation is a clause (lines split on "; ") holding at least two " = ": the segment before
the last " = " is numeric (numbers, units, + - * / //, parentheses, max / min / ceil) and the
segment after it starts with the printed result. Units and words are dropped; thousands
separators are removed. The result must equal the evaluated expression to the printed
precision: within half a unit of its last printed digit.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]?\d+)?"
TOKEN = re.compile(
    rf"\s*(?:(?P<num>{NUMBER})|(?P<fn>max|min|ceil)(?=\()|(?P<word>[A-Za-z_][\w/]*)"
    r"|(?P<op>//|[-+*/(),]))"
)
RESULT = re.compile(rf"\s*(?P<num>-?{NUMBER})")
FUNCTIONS = {"max": max, "min": min, "ceil": math.ceil}


def evaluate_expression(expression: str) -> float:
    parts, pos = [], 0
    expression = expression.rstrip()
    while pos < len(expression):
        m = TOKEN.match(expression, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot parse {expression[pos:]!r} in {expression!r}")
        pos = m.end()
        if m["num"]:
            parts.append(m["num"].replace(",", ""))
        elif m["fn"]:
            parts.append(m["fn"])
        elif m["op"]:
            parts.append(m["op"])
    python = " ".join(parts)
    return float(eval(python, {"__builtins__": {}}, FUNCTIONS))  # noqa: S307 - our own tokens


def half_ulp(printed: str) -> float:
    """Half a unit of the last printed digit of ``printed`` ('408.2' -> 0.05)."""
    exponent = Decimal(printed.replace(",", "")).as_tuple().exponent
    return 0.5 * 10.0**exponent


def equations(text: str) -> list[str]:
    """Every clause of ``text`` that is an equation (two or more ' = ')."""
    out = []
    for line in text.splitlines():
        for clause in line.split("; "):
            if clause.count(" = ") >= 2:
                out.append(clause)
    return out


def check_equation(clause: str) -> tuple[float, str]:
    """Evaluate the numeric side of ``clause``; assert it rounds to the printed result."""
    *_, expression, result = clause.split(" = ")
    m = RESULT.match(result)
    assert m, f"no printed result in {clause!r}"
    printed = m["num"]
    value = evaluate_expression(expression)
    tolerance = half_ulp(printed) * (1 + 1e-9) + 1e-12 * abs(value)
    assert abs(value - float(printed.replace(",", ""))) <= tolerance, (
        f"{clause!r}: evaluates to {value!r}, printed {printed}"
    )
    return value, printed
