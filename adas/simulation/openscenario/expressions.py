"""OpenSCENARIO 1.x parameter references (``$Name``) and expressions (``${$EgoSpeed + 2.5}``).

The expression language is the standard's (1.1 and later): numbers, ``true`` / ``false``,
parameter references, ``+ - * / %``, unary ``-``, ``not``, ``and``, ``or``, parentheses and the
functions ``round``, ``floor``, ``ceil``, ``sqrt`` and ``pow``. The shipped XSD restricts the
characters of an expression to letters, digits, ``_ + - * / % $ ( ) . ,`` and spaces, so there
are no comparison operators. Evaluation is a small recursive-descent parser (never ``eval``);
an expression that does not parse, names an unknown parameter or function, or divides by zero
raises ``ExpressionError`` with the expression and the reason.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final

ParamValue = bool | int | float | str

_TOKEN: Final[re.Pattern[str]] = re.compile(
    r"\s*(?:(?P<num>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<ref>\$[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/%(),]))"
)
_REFERENCE: Final[re.Pattern[str]] = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")
_FUNCTIONS: Final[dict[str, tuple[int, Callable[..., float]]]] = {
    # OpenSCENARIO 1.1+: half away from zero, like C's round() that esmini uses.
    "round": (1, lambda a: float(math.floor(abs(a) + 0.5) * (1 if a >= 0 else -1))),
    "floor": (1, lambda a: float(math.floor(a))),
    "ceil": (1, lambda a: float(math.ceil(a))),
    "sqrt": (1, math.sqrt),
    "pow": (2, math.pow),
}


class ExpressionError(ValueError):
    """A parameter reference or expression that cannot be evaluated (the message says why)."""


def is_expression(text: str) -> bool:
    return text.startswith("${") and text.endswith("}")


def is_reference(text: str) -> bool:
    return _REFERENCE.fullmatch(text) is not None


def resolve(text: str, params: Mapping[str, ParamValue]) -> ParamValue:
    """An attribute's value: a literal stays a string, ``$Name`` is the parameter's value,
    ``${...}`` is evaluated (a number or a boolean)."""
    if is_expression(text):
        return evaluate(text[2:-1], params)
    if text.startswith("$"):
        if not is_reference(text):
            raise ExpressionError(f"{text!r} is neither a parameter reference nor an expression")
        name = text[1:]
        if name not in params:
            raise ExpressionError(f"{text!r}: parameter {name!r} is not declared")
        return params[name]
    return text


def evaluate(body: str, params: Mapping[str, ParamValue]) -> float | bool:
    """Evaluate the body of ``${...}``."""
    tokens = _tokenize(body)
    parser = _Parser(tokens, params, body)
    value = parser.parse_or()
    if parser.pos != len(tokens):
        raise ExpressionError(f"${{{body}}}: unexpected {tokens[parser.pos][1]!r}")
    return value


def _tokenize(body: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = body.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"${{{body}}}: cannot read {text[pos:].strip()[:10]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    if not out:
        raise ExpressionError("${}: empty expression")
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], params: Mapping[str, ParamValue], body: str) -> None:
        self.tokens = tokens
        self.params = params
        self.body = body
        self.pos = 0

    def _fail(self, why: str) -> ExpressionError:
        return ExpressionError(f"${{{self.body}}}: {why}")

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _accept(self, kind: str, value: str) -> bool:
        tok = self._peek()
        if tok is not None and tok[0] == kind and tok[1] == value:
            self.pos += 1
            return True
        return False

    def _expect(self, value: str) -> None:
        if not self._accept("op", value):
            tok = self._peek()
            raise self._fail(f"expected {value!r}, found {tok[1] if tok else 'the end'!r}")

    def parse_or(self) -> float | bool:
        left = self.parse_and()
        while self._accept("word", "or"):
            right = self.parse_and()
            left = _truth(left, self) or _truth(right, self)
        return left

    def parse_and(self) -> float | bool:
        left = self.parse_not()
        while self._accept("word", "and"):
            right = self.parse_not()
            left = _truth(left, self) and _truth(right, self)
        return left

    def parse_not(self) -> float | bool:
        if self._accept("word", "not"):
            return not _truth(self.parse_not(), self)
        return self.parse_sum()

    def parse_sum(self) -> float | bool:
        left = self.parse_product()
        while True:
            if self._accept("op", "+"):
                left = _num(left, self) + _num(self.parse_product(), self)
            elif self._accept("op", "-"):
                left = _num(left, self) - _num(self.parse_product(), self)
            else:
                return left

    def parse_product(self) -> float | bool:
        left = self.parse_unary()
        while True:
            if self._accept("op", "*"):
                left = _num(left, self) * _num(self.parse_unary(), self)
            elif self._accept("op", "/"):
                d = _num(self.parse_unary(), self)
                if d == 0:
                    raise self._fail("division by zero")
                left = _num(left, self) / d
            elif self._accept("op", "%"):
                d = _num(self.parse_unary(), self)
                if d == 0:
                    raise self._fail("modulo by zero")
                left = math.fmod(_num(left, self), d)
            else:
                return left

    def parse_unary(self) -> float | bool:
        if self._accept("op", "-"):
            return -_num(self.parse_unary(), self)
        return self.parse_primary()

    def parse_primary(self) -> float | bool:
        tok = self._peek()
        if tok is None:
            raise self._fail("unexpected end")
        kind, value = tok
        self.pos += 1
        if kind == "num":
            return float(value)
        if kind == "ref":
            name = value[1:]
            if name not in self.params:
                raise self._fail(f"parameter {name!r} is not declared")
            return _param_number(name, self.params[name], self)
        if kind == "word":
            if value in ("true", "false"):
                return value == "true"
            if value not in _FUNCTIONS:
                raise self._fail(
                    f"unknown function {value!r} (OpenSCENARIO defines {', '.join(sorted(_FUNCTIONS))})"
                )
            arity, fn = _FUNCTIONS[value]
            self._expect("(")
            args = [_num(self.parse_or(), self)]
            while self._accept("op", ","):
                args.append(_num(self.parse_or(), self))
            self._expect(")")
            if len(args) != arity:
                raise self._fail(f"{value}() takes {arity} argument(s), got {len(args)}")
            try:
                return fn(*args)
            except ValueError as exc:
                raise self._fail(f"{value}{tuple(args)}: {exc}") from exc
        if value == "(":
            inner = self.parse_or()
            self._expect(")")
            return inner
        raise self._fail(f"unexpected {value!r}")


def _num(v: float | bool, p: _Parser) -> float:
    if isinstance(v, bool):
        raise p._fail("a boolean is used as a number")
    return v


def _truth(v: float | bool, p: _Parser) -> bool:
    if not isinstance(v, bool):
        raise p._fail("a number is used as a boolean")
    return v


def _param_number(name: str, v: ParamValue, p: _Parser) -> float | bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v)
    except ValueError:
        if v in ("true", "false"):
            return v == "true"
        raise p._fail(f"parameter {name!r} = {v!r} is not a number") from None
