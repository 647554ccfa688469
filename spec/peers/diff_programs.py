"""spec/peers/diff_programs.py: what the Twisted sides of the differential
specs share (defer_diff.py, receivers_diff.py, task_diff.py, ...): reading
the programs spec/helpers/twisted_diff.lua describes, printing traces, and
the parts of an interpreter that several peers have (Trace)."""

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


def plain_rep(v, numbers=(int, str)):
    """The trace text of nil, a boolean or a value of the types numbers (as
    twisted_diff.lua's interpreters print them); None for anything else."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers):
        return str(v)
    return None


class Trace:
    """Base of the interpreters whose programs run bodies of actions
    ("a:1,rel:2") and end them with a terminal (ret, raise, fail, d): the
    trace is self.out; action X runs the method do_X; an error an action
    raises is logged as "ACTION -> self.error_name(e)"."""

    def error_name(self, e):
        return type(e).__name__

    def log(self, line):
        self.out.append(line)

    def act(self, words, text):
        try:
            getattr(self, "do_" + words[0])(*words[1:])
        except Exception as e:  # noqa: BLE001 (any error is an outcome)
            self.log("%s -> %s" % (text, self.error_name(e)))

    def run_body(self, body):
        """Run a body's actions; return its terminal's value."""
        acts, term = body
        for words in acts:
            self.act(words, ":".join(words))
        if term is None:
            return None
        return self.terminal(term[0], term[1:])

    def terminal(self, what, args):
        """ret:N -> N, raise:N raises ValueError EN, fail:N -> its Failure,
        d:N -> the program's Deferred N (self.ds)."""
        from twisted.python.failure import Failure
        arg = int(args[0])
        if what == "ret":
            return arg
        if what == "raise":
            raise ValueError("E%d" % arg)
        if what == "fail":
            return Failure(ValueError("E%d" % arg))
        return self.ds[arg - 1]
