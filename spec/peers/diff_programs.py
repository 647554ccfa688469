"""spec/peers/diff_programs.py: what the Twisted sides of the differential
specs share (defer_diff.py, receivers_diff.py, task_diff.py): reading the
programs spec/helpers/twisted_diff.lua describes, and printing traces."""

import sys


def programs(path):
    """Yield (header words, body) per program of the file at path; body is
    the list of (words, line) between its "prog" and "end" lines."""
    header, body = None, None
    with open(path) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "prog":
                header, body = words, []
            elif words[0] == "end":
                yield header, body
                header, body = None, None
            else:
                body.append((words, line.rstrip("\n")))


def emit(pid, events):
    """Print one program's trace: "== pid", then one line per event."""
    print("== " + pid)
    for event in events:
        print(event)
    sys.stdout.flush()


def parse_body(text, terminals):
    """"a:1,ret:3" -> (actions, terminal), each a list of words; the
    terminal is the item whose first word is in terminals."""
    acts, term = [], None
    if text == "-":
        return acts, term
    for item in text.split(","):
        words = item.split(":")
        if words[0] in terminals:
            term = words
        else:
            acts.append(words)
    return acts, term


def run_programs(path, make):
    """Run every program of the file: prog = make(header); prog.line(words,
    line) for each of its lines; prog.finish(); then print its trace
    (prog.pid, prog.out)."""
    for header, body in programs(path):
        prog = make(header)
        for words, line in body:
            prog.line(words, line)
        prog.finish()
        emit(prog.pid, prog.out)


def consume_failures(deferreds):
    """Give every failed Deferred an errback, so that none is reported as
    unhandled later."""
    from twisted.python.failure import Failure
    for d in deferreds:
        if d.called and isinstance(getattr(d, "result", None), Failure):
            d.addErrback(lambda f: None)
