"""spec/peers/log_diff.py: Twisted's side of spec/log_diff_spec.lua.

Runs the programs of spec/helpers/log_diff.lua (which documents their
format) with twisted.logger.formatEvent: each program's fields make an
event dict (tables are objects with attributes, as "{a.b}" is attribute
access in Twisted), each "fmt" line formats it with that log_format.
"""

import sys
from types import SimpleNamespace

from twisted.logger import formatEvent
from diff_programs import emit, programs

UNABLE = "Unable to format event "


class LuaBool:
    """A boolean that formats as Lua's tostring spells it: braid prints
    field values with tostring (docs/log.md, Logger)."""

    def __init__(self, value):
        self.value = value

    def __format__(self, spec):
        return format(str(self), spec)

    def __str__(self):
        return "true" if self.value else "false"

    __repr__ = __str__


def unhex(text):
    return bytes.fromhex(text[1:]).decode("ascii")


def set_field(fields, path, kind, value):
    parent, names = fields, path.split(".")
    for name in names[:-1]:
        parent = parent[name] if isinstance(parent, dict) else getattr(parent, name)
    if kind == "int":
        v = int(value)
    elif kind == "str":
        v = unhex(value)
    elif kind == "bool":
        v = LuaBool(value == "true")
    elif kind == "table":
        v = SimpleNamespace()
    else:
        # nil: a Lua table cannot hold it, so braid's field is absent
        return
    if isinstance(parent, dict):
        parent[names[-1]] = v
    else:
        setattr(parent, names[-1], v)


def run(body):
    fields, out = {}, []
    for words, line in body:
        if words[0] == "field":
            set_field(fields, words[1], words[2], words[3] if len(words) > 3 else None)
        elif words[0] == "fmt":
            event = dict(fields)
            event["log_format"] = None if words[2] == "nil" else unhex(words[2])
            text = formatEvent(event)
            if text.startswith(UNABLE):
                out.append("f%s unable" % words[1])
            else:
                out.append("f%s = [%s]" % (words[1], text))
        else:
            raise AssertionError("unknown line " + line)
    return out


def main():
    for header, body in programs(sys.argv[1]):
        emit(header[1], run(body))


if __name__ == "__main__":
    main()
