"""The proxy subresources' addressing: `[scheme:]name[:port]`, the path after `proxy`, and how requests parse."""

from __future__ import annotations

from multidict import MultiDict

from kubelite.apiserver import requestinfo
from kubelite.apiserver.proxy import proxied_path, split_scheme_name_port


def test_names_with_scheme_and_port() -> None:
    assert split_scheme_name_port("web") == ("", "web", "")
    assert split_scheme_name_port("web:8080") == ("", "web", "8080")
    assert split_scheme_name_port("https:web:443") == ("https", "web", "443")
    assert split_scheme_name_port("http:web:") == ("http", "web", "")
    for bad in ("ftp:web:21", "a:b:c:d", "", ":80"):
        assert split_scheme_name_port(bad) is None, bad


def test_the_proxied_path_keeps_its_encoding_and_trailing_slash() -> None:
    assert proxied_path("/api/v1/nodes/n1/proxy", 4) == "/"
    assert proxied_path("/api/v1/nodes/n1/proxy/", 4) == "/"
    assert proxied_path("/api/v1/nodes/n1/proxy/stats/summary", 4) == "/stats/summary"
    assert proxied_path("/api/v1/namespaces/ns/pods/proxy/proxy/a%20b/?x=1", 6) == "/a%20b/"
    assert proxied_path("/api/v1/namespaces/ns/services/s:80/proxy/dir/", 6) == "/dir/"


def test_proxy_requests_parse_with_the_method_as_verb() -> None:
    info = requestinfo.parse("GET", "/api/v1/namespaces/ns/pods/web:8080/proxy/a/b", MultiDict(watch="1"))
    assert info is not None
    assert (info.resource, info.namespace, info.name, info.subresource, info.verb) == \
        ("pods", "ns", "web:8080", "proxy", "get")
    info = requestinfo.parse("POST", "/api/v1/nodes/n1/proxy/x", MultiDict())
    assert info is not None and (info.resource, info.name, info.verb) == ("nodes", "n1", "create")
    assert requestinfo.parse("GET", "/api/v1/namespaces/ns/pods/web/log/extra", MultiDict()) is None
