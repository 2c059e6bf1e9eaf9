"""Label and field selectors: parsing (with Kubernetes' grammar and messages) and fast matching.

`parse_labels` reads the `?labelSelector=` syntax of labels.Parse (`a=b`, `a==b`, `a!=b`,
`a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`); `from_label_selector` builds the same matcher
from a metav1.LabelSelector object; `parse_fields` reads `?fieldSelector=` (`a=b`, `a==b`, `a!=b`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from kubelite.api.names import is_label_value, is_qualified_name

IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN = "exists", "!", "gt", "lt"
BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_OPERATOR_TOKENS = ("!=", "==", "=", ">", "<", "!", "(", ")", ",")
_EXPRESSION_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


class SelectorError(ValueError):
    """A selector that does not parse or names something invalid; the message is for the client (400)."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One label requirement: key, operator (in, notin, =, ==, !=, exists, !, gt, lt) and values."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    @property
    def single_value(self) -> bool:
        """True when the requirement is "key has exactly this value" (=, ==, or in with one value)."""
        return self.operator in (EQUALS, DOUBLE_EQUALS) or self.operator == IN and len(self.values) == 1

    def __str__(self) -> str:
        """The canonical form labels.Requirement.String gives (values sorted)."""
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        values = ",".join(sorted(self.values))
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({values})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{values}"

    def test(self) -> Callable[[Mapping[str, str]], bool]:
        """A predicate over a label map, specialised for this operator."""
        key, values = self.key, frozenset(self.values)
        op = self.operator
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return lambda labels: labels.get(key) in values
        if op in (NOT_IN, NOT_EQUALS):
            return lambda labels: key not in labels or labels[key] not in values
        if op == EXISTS:
            return lambda labels: key in labels
        if op == DOES_NOT_EXIST:
            return lambda labels: key not in labels
        bound = int(self.values[0])
        if op == GREATER_THAN:
            return lambda labels: (n := _integer(labels.get(key))) is not None and n > bound
        return lambda labels: (n := _integer(labels.get(key))) is not None and n < bound


def _integer(value: str | None) -> int | None:
    """A label value read as a base-10 integer, as strconv.ParseInt would (None when it is not one)."""
    if value is None:
        return None
    digits = value[1:] if value[:1] in ("+", "-") else value
    if not digits.isascii() or not digits.isdigit():
        return None
    return int(value)


class LabelSelector:
    """An AND of requirements, compiled for matching: equalities become one subset test of dict items."""

    __slots__ = ("requirements", "nothing", "_equal", "_tests")

    def __init__(self, requirements: list[Requirement], nothing: bool = False):
        self.requirements = sorted(requirements, key=lambda r: r.key)
        self.nothing = nothing
        """True for the selector that matches no object (a nil metav1.LabelSelector)."""
        self._equal = frozenset((r.key, r.values[0]) for r in self.requirements if r.single_value)
        self._tests = [r.test() for r in self.requirements if not r.single_value]

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.requirements and not self.nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """True when a label map satisfies every requirement."""
        if self.nothing:
            return False
        if labels is None:
            labels = {}
        if self._equal and not labels.items() >= self._equal:
            return False
        for test in self._tests:
            if not test(labels):
                return False
        return True

    def exact(self, key: str) -> str | None:
        """The single value `key` must have (from =, == or a one-value in), for index lookups."""
        for r in self.requirements:
            if r.key == key and r.single_value:
                return r.values[0]
        return None

    def __str__(self) -> str:
        """The canonical selector string (requirements sorted by key)."""
        return ",".join(str(r) for r in self.requirements)


def _lex(text: str) -> list[tuple[str, str]]:
    """Tokens of a label selector as (kind, literal); kind is 'id', 'end', a keyword or a symbol."""
    tokens: list[tuple[str, str]] = []
    i, size = 0, len(text)
    while True:
        while i < size and text[i] in _WHITESPACE:
            i += 1
        if i >= size:
            tokens.append(("end", ""))
            return tokens
        if text[i] in _SPECIAL:
            symbol = next(s for s in _OPERATOR_TOKENS if text.startswith(s, i))
            tokens.append((symbol, symbol))
            i += len(symbol)
            continue
        start = i
        while i < size and text[i] not in _SPECIAL and text[i] not in _WHITESPACE:
            i += 1
        word = text[start:i]
        tokens.append((word if word in (IN, NOT_IN) else "id", word))


class _Parser:
    """Recursive descent over the tokens, mirroring labels.Parse (and its error messages)."""

    def __init__(self, text: str):
        self.tokens = _lex(text)
        self.position = 0

    def peek(self, values: bool = True) -> tuple[str, str]:
        """The next token; where values are expected the keywords in/notin are plain identifiers."""
        kind, literal = self.tokens[self.position]
        return ("id", literal) if values and kind in (IN, NOT_IN) else (kind, literal)

    def take(self, values: bool = True) -> tuple[str, str]:
        """Consume and return the next token."""
        token = self.peek(values)
        self.position += 1
        return token

    def parse(self) -> list[Requirement]:
        """The comma-separated requirements of the whole string."""
        requirements: list[Requirement] = []
        while True:
            kind, literal = self.peek()
            if kind == "end":
                return requirements
            if kind not in ("id", "!"):
                raise SelectorError(f"found '{literal}', expected: !, identifier, or 'end of string'")
            requirements.append(self.requirement())
            kind, literal = self.take()
            if kind == "end":
                return requirements
            if kind != ",":
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            kind, literal = self.peek()
            if kind not in ("id", "!"):
                raise SelectorError(f"found '{literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        """One requirement: [!]key, then an operator and its values unless it is an existence test."""
        kind, key = self.take()
        negated = kind == "!"
        if negated:
            kind, key = self.take()
        if kind != "id":
            raise _unparsable(f"found '{key}', expected: identifier")
        _check_key(key)
        if negated:
            return Requirement(key, DOES_NOT_EXIST)
        if self.peek()[0] in ("end", ","):
            return Requirement(key, EXISTS)
        kind, literal = self.take(values=False)
        operator = {IN: IN, NOT_IN: NOT_IN, "=": EQUALS, "==": DOUBLE_EQUALS, "!=": NOT_EQUALS,
                    ">": GREATER_THAN, "<": LESS_THAN}.get(kind)
        if operator is None:
            raise _unparsable(f"found '{literal}', expected: {', '.join(BINARY_OPERATORS)}")
        values = self.value_set() if operator in (IN, NOT_IN) else self.exact_value()
        return new_requirement(key, operator, values)

    def value_set(self) -> list[str]:
        """The parenthesised values of in/notin; empty entries read as "" (so `()` is {""})."""
        kind, literal = self.take()
        if kind != "(":
            raise _unparsable(f"found '{literal}' expected: '('")
        kind, literal = self.peek()
        if kind == ")":
            self.take()
            return [""]
        if kind not in ("id", ","):
            raise _unparsable(f"found '{literal}', expected: ',', ')' or identifier")
        values: list[str] = []
        while True:
            kind, literal = self.take()
            if kind == "id":
                values.append(literal)
                following, shown = self.peek()
                if following == ")":
                    self.take()
                    return sorted(set(values))
                if following != ",":
                    raise _unparsable(f"found '{shown}', expected: ',' or ')'")
            elif kind == ",":
                if not values:
                    values.append("")
                following = self.peek()[0]
                if following == ")":
                    values.append("")
                    self.take()
                    return sorted(set(values))
                if following == ",":
                    self.take()
                    values.append("")
            else:
                raise _unparsable(f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> list[str]:
        """The single value after =, ==, !=, > or < (nothing before ',' or the end reads as "")."""
        kind, literal = self.peek()
        if kind in ("end", ","):
            return [""]
        self.take()
        if kind != "id":
            raise _unparsable(f"found '{literal}', expected: identifier")
        return [literal]


def _unparsable(detail: str) -> SelectorError:
    """An error raised while parsing one requirement, with upstream's prefix."""
    return SelectorError(f"unable to parse requirement: {detail}")


def _check_key(key: str, path: str = "<nil>") -> None:
    """Reject a label key that is not a qualified name (upstream prints a nil path as <nil>)."""
    errors = is_qualified_name(key)
    if errors:
        raise _unparsable(f'{path}: Invalid value: "{key}": {"; ".join(errors)}')


def _count_problem(operator: str, values: list[str]) -> str:
    """What is wrong with the number of values for an operator ("" when nothing is)."""
    if operator in (IN, NOT_IN) and not values:
        return "for 'in', 'notin' operators, values set can't be empty"
    if operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(values) != 1:
        return "exact-match compatibility requires one single value"
    if operator in (EXISTS, DOES_NOT_EXIST) and values:
        return "values set must be empty for exists and does not exist"
    if operator in (GREATER_THAN, LESS_THAN) and len(values) != 1:
        return "for 'Gt', 'Lt' operators, exactly one value is required"
    return ""


def new_requirement(key: str, operator: str, values: list[str], path: str = "") -> Requirement:
    """A validated requirement, as labels.NewRequirement checks it (SelectorError when invalid)."""
    _check_key(key, f"{path}.key" if path else "<nil>")
    at = f"{path}.values" if path else "values"
    problems: list[str] = []
    count_problem = _count_problem(operator, values)
    if count_problem:
        problems.append(f"{at}: Invalid value: [{' '.join(values)}]: {count_problem}")
    for index, value in enumerate(values):
        if operator in (GREATER_THAN, LESS_THAN) and _integer(value) is None:
            problems.append(f'{at}[{index}]: Invalid value: "{value}": '
                            "for 'Gt', 'Lt' operators, the value must be an integer")
        errors = is_label_value(value)
        if errors:
            problems.append(f'{at}[{index}][{key}]: Invalid value: "{value}": {"; ".join(errors)}')
    if problems:
        raise _unparsable(problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]")
    return Requirement(key, operator, tuple(values))


def parse_labels(text: str) -> LabelSelector:
    """Parse a label selector string (labels.Parse); SelectorError with Kubernetes' message when invalid."""
    return LabelSelector(_Parser(text).parse())


def from_label_selector(selector: dict[str, Any] | None) -> LabelSelector:
    """The matcher of a metav1.LabelSelector: None matches nothing, {} matches everything."""
    if selector is None:
        return LabelSelector([], nothing=True)
    requirements = [new_requirement(key, EQUALS, [value], "matchLabels")
                    for key, value in (selector.get("matchLabels") or {}).items()]
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        operator = _EXPRESSION_OPERATORS.get(expression.get("operator", ""))
        if operator is None:
            raise SelectorError(f'"{expression.get("operator", "")}" is not a valid label selector operator')
        values = list(expression.get("values") or [])
        requirements.append(new_requirement(expression.get("key", ""), operator, values,
                                            f"matchExpressions[{index}]"))
    return LabelSelector(requirements)


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """One field requirement: field, operator (=, ==, !=) and value."""

    field: str
    operator: str
    value: str


class FieldSelector:
    """An AND of field requirements, matched against an object's selectable fields."""

    __slots__ = ("requirements", "_equal", "_different")

    def __init__(self, requirements: list[FieldRequirement]):
        self.requirements = requirements
        self._equal = [(r.field, r.value) for r in requirements if r.operator != NOT_EQUALS]
        self._different = [(r.field, r.value) for r in requirements if r.operator == NOT_EQUALS]

    @property
    def empty(self) -> bool:
        """True when the selector selects everything."""
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        """True when the fields (a missing field reads as "") satisfy every requirement."""
        for name, value in self._equal:
            if fields.get(name, "") != value:
                return False
        for name, value in self._different:
            if fields.get(name, "") == value:
                return False
        return True

    def exact(self, field: str) -> str | None:
        """The value `field` must equal, if any (e.g. spec.nodeName for a kubelet's watch)."""
        for name, value in self._equal:
            if name == field:
                return value
        return None

    def __str__(self) -> str:
        """The canonical selector string, values escaped."""
        return ",".join(f"{r.field}{r.operator}{_escape(r.value)}" for r in self.requirements)


def _escape(value: str) -> str:
    """Escape what would otherwise end a field selector value."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not escaped with a backslash."""
    terms, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == ",":
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return terms


def _unescape(value: str) -> str:
    """Undo field selector escaping of backslash, comma and equals; reject the rest (fields.UnescapeValue)."""
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_term(term: str) -> tuple[str, str, str] | None:
    """(field, operator, raw value) split at the first operator; field names have no escapes."""
    for index in range(len(term)):
        for operator in (NOT_EQUALS, DOUBLE_EQUALS, EQUALS):
            if term.startswith(operator, index):
                return term[:index], operator, term[index + len(operator):]
    return None


def parse_fields(text: str, allowed: Collection[str] | None = None) -> FieldSelector:
    """Parse a field selector; with `allowed`, other field names fail as 'field label not supported'."""
    requirements = []
    for term in _split_terms(text):
        if not term:
            continue
        found = _split_term(term)
        if found is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        field, operator, value = found
        if allowed is not None and field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        requirements.append(FieldRequirement(field, operator, _unescape(value)))
    return FieldSelector(requirements)
