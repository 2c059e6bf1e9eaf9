"""Label selectors (string syntax and LabelSelector objects) and field selectors."""


import pytest

from kubelite.api.selectors import (
    DOES_NOT_EXIST,
    EXISTS,
    GREATER_THAN,
    IN,
    NOT_IN,
    Requirement,
    SelectorError,
    from_label_selector,
    parse_fields,
    parse_labels,
)


@pytest.mark.parametrize("text, canonical", [
    ("", ""),
    ("a=b", "a=b"),
    ("a==b", "a==b"),
    ("a!=b", "a!=b"),
    ("a = b , c", "a=b,c"),
    ("a in (y,x)", "a in (x,y)"),
    ("a notin(x)", "a notin (x)"),
    ("!a", "!a"),
    ("b,a", "a,b"),
    ("a>1", "a>1"),
    ("a<5", "a<5"),
    ("a=", "a="),
    ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
    ("in in (in,notin)", "in in (in,notin)"),
    ("example.com/app=web", "example.com/app=web"),
])
def test_parse_and_canonical_form(text, canonical):
    assert str(parse_labels(text)) == canonical


def test_parsed_requirements():
    selector = parse_labels("tier in (fe),!canary,env,ver>2,zone notin (a,b)")
    assert selector.requirements == [
        Requirement("canary", DOES_NOT_EXIST), Requirement("env", EXISTS), Requirement("tier", IN, ("fe",)),
        Requirement("ver", GREATER_THAN, ("2",)), Requirement("zone", NOT_IN, ("a", "b")),
    ]


@pytest.mark.parametrize("text, message", [
    ("=a", "found '=', expected: !, identifier, or 'end of string'"),
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("a=b,", "found '', expected: identifier after ','"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a in x", "unable to parse requirement: found 'x' expected: '('"),
    ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a>=1", "unable to parse requirement: found '=', expected: identifier"),
    ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, "
            "the value must be an integer"),
    ("a@b=c", 'unable to parse requirement: <nil>: Invalid value: "a@b": name part must consist of '
              "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
              "character"),
    ("a=b@c", 'unable to parse requirement: values[0][a]: Invalid value: "b@c": a valid label must be an '
              "empty string or consist of alphanumeric characters"),
    ("a=" + "x" * 64, "must be no more than 63 characters"),
    ("/a=b", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty'),
    ("a<-5", 'values[0][a]: Invalid value: "-5": a valid label must be'),
])
def test_parse_errors(text, message):
    with pytest.raises(SelectorError) as caught:
        parse_labels(text)
    assert message in str(caught.value)


@pytest.mark.parametrize("text, labels, expected", [
    ("app=web", {"app": "web", "x": "y"}, True),
    ("app=web", {"app": "db"}, False),
    ("app=web", None, False),
    ("app!=web", {}, True),
    ("app!=web", {"app": "web"}, False),
    ("app in (web,db)", {"app": "db"}, True),
    ("app in (web,db)", {}, False),
    ("app notin (web)", {}, True),
    ("app notin (web)", {"app": "web"}, False),
    ("app", {"app": ""}, True),
    ("!app", {"app": ""}, False),
    ("!app", {"other": "x"}, True),
    ("ver>2", {"ver": "3"}, True),
    ("ver>2", {"ver": "2"}, False),
    ("ver>2", {"ver": "x"}, False),
    ("ver<2", {"ver": "-1"}, True),
    ("ver<2", {}, False),
    ("a=", {"a": ""}, True),
    ("", {"anything": "x"}, True),
    ("app=web,tier in (fe),!canary", {"app": "web", "tier": "fe"}, True),
    ("app=web,tier in (fe),!canary", {"app": "web", "tier": "fe", "canary": "1"}, False),
])
def test_matching(text, labels, expected):
    assert parse_labels(text).matches(labels) is expected


def test_exact_value_for_index_lookups():
    selector = parse_labels("app=web,tier in (fe),x in (a,b)")
    assert selector.exact("app") == "web" and selector.exact("tier") == "fe"
    assert selector.exact("x") is None and selector.exact("nope") is None


def test_label_selector_object():
    selector = from_label_selector({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                             {"key": "canary", "operator": "DoesNotExist"},
                             {"key": "env", "operator": "Exists"},
                             {"key": "zone", "operator": "NotIn", "values": ["a"]}]})
    assert str(selector) == "app=web,!canary,env,tier in (be,fe),zone notin (a)"
    assert selector.matches({"app": "web", "tier": "be", "env": "prod", "zone": "b"})
    assert not selector.matches({"app": "web", "tier": "be", "env": "prod", "zone": "a"})
    assert not selector.matches({"app": "web", "tier": "be"})


def test_nil_and_empty_label_selector_objects():
    nothing, everything = from_label_selector(None), from_label_selector({})
    assert not nothing.matches({"a": "b"}) and not nothing.empty
    assert everything.matches({"a": "b"}) and everything.matches(None) and everything.empty


@pytest.mark.parametrize("selector, message", [
    ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
     '"Equals" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]},
     "matchExpressions[0].values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "values set must be empty for exists and does not exist"),
    ({"matchLabels": {"bad key": "x"}}, 'matchLabels.key: Invalid value: "bad key"'),
    ({"matchLabels": {"k": "bad value"}}, 'matchLabels.values[0][k]: Invalid value: "bad value"'),
])
def test_label_selector_object_errors(selector, message):
    with pytest.raises(SelectorError) as caught:
        from_label_selector(selector)
    assert message in str(caught.value)


ALLOWED = {"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"}


def test_field_selector_parse_and_match():
    selector = parse_fields("spec.nodeName=node-1,status.phase!=Failed,metadata.name==web", ALLOWED)
    assert [(r.field, r.operator, r.value) for r in selector.requirements] == [
        ("spec.nodeName", "=", "node-1"), ("status.phase", "!=", "Failed"), ("metadata.name", "==", "web")]
    fields = {"metadata.name": "web", "spec.nodeName": "node-1", "status.phase": "Running"}
    assert selector.matches(fields)
    assert not selector.matches({**fields, "status.phase": "Failed"})
    assert not selector.matches({**fields, "spec.nodeName": "node-2"})
    assert selector.exact("spec.nodeName") == "node-1" and selector.exact("status.phase") is None


def test_field_selector_missing_field_reads_as_empty():
    assert parse_fields("spec.nodeName=").matches({})
    assert parse_fields("spec.nodeName!=").matches({"spec.nodeName": "n"})
    assert not parse_fields("spec.nodeName!=").matches({})


def test_field_selector_escapes():
    selector = parse_fields(r"metadata.name=a\,b\=c\\d,,")
    assert [r.value for r in selector.requirements] == ["a,b=c\\d"]
    assert str(selector) == r"metadata.name=a\,b\=c\\d"
    assert selector.matches({"metadata.name": "a,b=c\\d"})
    assert parse_fields("").empty and parse_fields("").matches({"x": "y"})


@pytest.mark.parametrize("text, message", [
    ("spec.foo=bar", "field label not supported: spec.foo"),
    ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
    ("metadata.name=a,b", "invalid selector: 'metadata.name=a,b'; can't understand 'b'"),
    ("metadata.name=a=b", "invalid field selector: unescaped character in value: ="),
    (r"metadata.name=a\x", r"invalid field selector: invalid escape sequence: \x"),
    ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
])
def test_field_selector_errors(text, message):
    with pytest.raises(SelectorError) as caught:
        parse_fields(text, ALLOWED)
    assert str(caught.value) == message
