"""Generate kubelite/api/protobuf_fields.json, the Kubernetes protobuf field table.

Runs offline. Inputs are two Go binaries that link the Kubernetes API types:

* ``kubectl`` v1.33 (``/usr/lib/google-cloud-sdk/bin/kubectl.1.33`` on the dev machines): every k8s.io/api
  group and k8s.io/apimachinery;
* a binary that links ``k8s.io/apiextensions-apiserver`` (``/usr/lib/google-cloud-sdk/bin/anthoscli``).

From each binary it reads (a) the gzipped ``FileDescriptorProto`` that gogo-protobuf registers for every
``generated.proto`` (field numbers, wire types, map entries) and (b) the Go runtime
type information of the API structs (the ``json:"..."`` tag of every field, ``,inline``, ``omitempty`` and
whether the field is a pointer), which is what the JSON form of an object follows.  The apiextensions copy
in anthoscli predates Kubernetes 1.30, so the few fields added since (checked against the v1.33
``generated.proto``) are patched in by ``APIEXTENSIONS_PATCH``.

Output: ``{message: {field_number: [json_name, kind, detail, repeated, omit_zero]}}`` where kind is a scalar
type (``string``, ``bytes``, ``bool``, ``int32``, ``int64`` or ``double``), ``message`` (detail = message
name), ``inline`` (a message whose fields are merged into the parent's JSON object) or ``map`` (detail =
[key type, value type or message name]); ``omit_zero`` is true for non-pointer Go fields tagged
``omitempty``, whose zero value the JSON form leaves out.

Usage: ``python tools/gen_protobuf_fields.py [--kubectl PATH] [--apiextensions PATH] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

SCALARS = {1: "double", 3: "int64", 5: "int32", 8: "bool", 9: "string", 12: "bytes"}  # all the API types use
GO_SCALAR_KINDS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 24}  # bool, ints, uints, floats, string
GO_PTR, GO_SLICE, GO_STRUCT = 22, 23, 25
APIEXT = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"
APIEXTENSIONS_PATCH: dict[str, dict[str, list]] = {
    f"{APIEXT}.CustomResourceDefinitionVersion": {
        "9": ["selectableFields", "message", f"{APIEXT}.SelectableField", True, False],
    },
    f"{APIEXT}.SelectableField": {"1": ["jsonPath", "string", None, False, False]},
    f"{APIEXT}.ValidationRule": {
        "3": ["messageExpression", "string", None, False, True],
        "4": ["reason", "string", None, False, False],
        "5": ["fieldPath", "string", None, False, True],
        "6": ["optionalOldSelf", "bool", None, False, False],
    },
}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """Read a base-128 varint at i; return (value, next index)."""
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) for each field of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield key >> 3, value
        elif wire == 2:
            n, i = _varint(buf, i)
            yield key >> 3, buf[i:i + n]
            i += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield key >> 3, buf[i:i + size]
            i += size
        else:
            raise ValueError(f"unexpected wire type {wire}")


def _message_descriptors(buf: bytes, prefix: str, out: dict[str, dict]) -> None:
    """Collect DescriptorProto buf (and nested types) into out keyed by full name."""
    name, fields, nested, map_entry = "", [], [], False
    for num, value in _fields(buf):
        if num == 1:
            name = value.decode()
        elif num == 2:
            fields.append(value)
        elif num == 3:
            nested.append(value)
        elif num == 7:
            map_entry = any(n == 7 and v for n, v in _fields(value))
    full = f"{prefix}.{name}"
    desc: dict[int, dict] = {}
    for fbuf in fields:
        f: dict = {"type_name": ""}
        for num, value in _fields(fbuf):
            if num == 1:
                f["name"] = value.decode()
            elif num == 3:
                f["number"] = value
            elif num == 4:
                f["repeated"] = value == 3
            elif num == 5:
                f["type"] = value
            elif num == 6:
                f["type_name"] = value.decode().lstrip(".")
        desc[f["number"]] = f
    out[full] = {"fields": desc, "map_entry": map_entry}
    for nbuf in nested:
        _message_descriptors(nbuf, full, out)


def proto_descriptors(data: bytes) -> dict[str, dict]:
    """Find every gzipped generated.proto descriptor in a Go binary; return messages by full name."""
    messages: dict[str, dict] = {}
    for m in re.finditer(rb"\x1f\x8b\x08", data):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[m.start():m.start() + 2_000_000])
        except zlib.error:
            continue
        if b"generated.proto" not in raw[:200]:
            continue
        package = next((v.decode() for n, v in _fields(raw) if n == 2), "")
        for num, value in _fields(raw):
            if num == 4:
                _message_descriptors(value, package, messages)
    return messages


class GoBinary:
    """Reader for the Go (1.20+) runtime type information of a linked ELF binary."""

    def __init__(self, path: str) -> None:
        """Load the binary and its section table."""
        self.data = Path(path).read_bytes()
        table = subprocess.run(["readelf", "-S", "-W", path], capture_output=True, text=True, check=True).stdout
        self.sections = {
            m.group(1): (int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16))
            for m in re.finditer(r"\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", table)
        }
        self.types_base = self.sections[".rodata"][0]

    def _off(self, addr: int) -> int:
        """File offset of a virtual address."""
        for start, offset, size in self.sections.values():
            if start <= addr < start + size:
                return addr - start + offset
        raise ValueError(hex(addr))

    def _u8(self, addr: int) -> int:
        """Byte at addr."""
        return self.data[self._off(addr)]

    def _u64(self, addr: int) -> int:
        """Little-endian uint64 at addr."""
        return struct.unpack_from("<Q", self.data, self._off(addr))[0]

    def _i32(self, addr: int) -> int:
        """Little-endian int32 at addr."""
        return struct.unpack_from("<i", self.data, self._off(addr))[0]

    def _name(self, addr: int) -> tuple[str, str]:
        """Decode a runtime name (flags, varint length, bytes, optional tag) at addr."""
        off = self._off(addr)
        n, i = _varint(self.data, off + 1)
        name = self.data[i:i + n].decode(errors="replace")
        tag = ""
        if self.data[off] & 2:
            t, j = _varint(self.data, i + n)
            tag = self.data[j:j + t].decode(errors="replace")
        return name, tag

    def structs(self) -> dict[tuple[str, str], list[tuple[str, int]]]:
        """Map (package path, type name) of every reachable struct to its fields as (tag, Go kind)."""
        a, o, s = self.sections[".typelink"]
        stack = [self.types_base + x for x in struct.unpack_from(f"<{s // 4}i", self.data, o)]
        seen: set[int] = set()
        out: dict[tuple[str, str], list[tuple[str, int]]] = {}
        while stack:
            t = stack.pop()
            if not t or t in seen:
                continue
            seen.add(t)
            try:
                kind, tflag = self._u8(t + 23) & 0x1F, self._u8(t + 20)
                name = self._name(self.types_base + self._i32(t + 40))[0][1 if tflag & 2 else 0:]
            except (ValueError, IndexError, struct.error):
                continue
            if ptr_to_this := self._i32(t + 44):
                stack.append(self.types_base + ptr_to_this)
            if kind in (17, GO_PTR, GO_SLICE):
                stack.append(self._u64(t + 48))
            elif kind == 21:
                stack += [self._u64(t + 48), self._u64(t + 56)]
            elif kind == GO_STRUCT and tflag & 1:
                pkg = self._name(self.types_base + self._i32(t + 80))[0]
                fields = []
                for k in range(self._u64(t + 64)):
                    fa = self._u64(t + 56) + 24 * k
                    ftype = self._u64(fa + 8)
                    stack.append(ftype)
                    fields.append((self._name(self._u64(fa))[1], self._u8(ftype + 23) & 0x1F))
                out[(pkg, name.split(".", 1)[-1])] = fields
        return out


def _go_fields(structs: dict, message: str) -> dict[int, tuple[str, bool, bool]]:
    """For a proto message, map field number to (json name, inline, omit_zero) from its Go struct tags."""
    package, _, name = message.rpartition(".")
    path = package.replace(".", "/").replace("apiextensions_apiserver", "apiextensions-apiserver")
    path = path.replace("k8s/io/", "k8s.io/", 1)
    out = {}
    for tag, kind in structs.get((path, name), []):
        pb = re.search(r'protobuf:"[a-z0-9]+,(\d+),', tag)
        js = re.search(r'json:"([^"]*)"', tag)
        if not pb or not js:
            continue
        json_name, *opts = js.group(1).split(",")
        scalar = kind in GO_SCALAR_KINDS or kind == GO_SLICE
        out[int(pb.group(1))] = (json_name, "inline" in opts, scalar and "omitempty" in opts)
    return out


def build(kubectl: str, apiextensions: str) -> dict[str, dict[str, list]]:
    """Build the field table from the two binaries."""
    table: dict[str, dict[str, list]] = {}
    for path, keep in ((kubectl, lambda m: not m.startswith(APIEXT)), (apiextensions, lambda m: m.startswith(APIEXT))):
        binary = GoBinary(path)
        messages = {k: v for k, v in proto_descriptors(binary.data).items() if keep(k)}
        structs = binary.structs()
        for name, desc in sorted(messages.items()):
            if desc["map_entry"]:
                continue
            go = _go_fields(structs, name)
            entry = {}
            for number, f in sorted(desc["fields"].items()):
                json_name, inline, omit = go.get(number, (f["name"], False, False))
                target = messages.get(f["type_name"])
                if target and target["map_entry"]:
                    key, value = target["fields"][1], target["fields"][2]
                    detail = [SCALARS[key["type"]], value["type_name"] or SCALARS[value["type"]]]
                    entry[str(number)] = [json_name, "map", detail, False, False]
                elif f["type"] == 11:
                    kind = "inline" if inline else "message"
                    entry[str(number)] = [json_name or f["name"], kind, f["type_name"], f["repeated"], False]
                else:
                    omit = omit and not f["repeated"]
                    entry[str(number)] = [json_name, SCALARS[f["type"]], None, f["repeated"], omit]
            table[name] = entry
    for name, patch in APIEXTENSIONS_PATCH.items():
        table.setdefault(name, {}).update(patch)
    return table


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default="/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
    parser.add_argument("--apiextensions", default="/usr/lib/google-cloud-sdk/bin/anthoscli")
    parser.add_argument("--out", default=str(Path(__file__).parent.parent / "kubelite/api/protobuf_fields.json"))
    args = parser.parse_args()
    table = build(args.kubectl, args.apiextensions)
    text = json.dumps(table, separators=(",", ":"), sort_keys=False)
    Path(args.out).write_text(text + "\n")
    print(f"{len(table)} messages, {len(text)} bytes -> {args.out}")


if __name__ == "__main__":
    main()
