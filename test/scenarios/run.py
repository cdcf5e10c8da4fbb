#!/usr/bin/python3
"""Scenario test runner for line_status.

Imports every test/scenarios/test_*.py (in file name order) and runs every
function named test_* in the order it is defined in its file.  An optional
argument keeps only the tests whose "<module>.<name>" contains it.

Prints exactly one line per test:
    ok <module>.<name> (<secs>s)
    FAIL <module>.<name>: <one-line reason>
followed, on failure only, by the traceback indented below.  Figures a test
reports with common.note() are appended to its line after " -- ".
A test that raises anything is a failure; there are no skips.  Exit status
is 1 if any test failed (or none was selected), else 0.

Needs the environment test/lib.sh sets (see common.py).
"""
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402


def one_line(e):
    text = '%s: %s' % (type(e).__name__, str(e).strip()) if str(e).strip() else type(e).__name__
    text = ' | '.join(part.strip() for part in text.splitlines() if part.strip())
    return text if len(text) <= 400 else text[:400] + '...'


def indent(text):
    return ''.join('    ' + line + '\n' for line in text.rstrip('\n').splitlines())


def collect(pattern):
    tests = []
    for fname in sorted(os.listdir(HERE)):
        if not (fname.startswith('test_') and fname.endswith('.py')):
            continue
        modname = fname[:-3]
        try:
            mod = importlib.import_module(modname)
        except Exception as e:          # noqa: BLE001
            tests.append((modname + '.<import>', e))
            continue
        for name, fn in vars(mod).items():
            if name.startswith('test_') and callable(fn) and getattr(fn, '__module__', None) == modname:
                full = '%s.%s' % (modname, name)
                if pattern is None or pattern in full:
                    tests.append((full, fn))
    return tests


def main(argv):
    pattern = argv[1] if len(argv) > 1 else None
    tests = collect(pattern)
    if not tests:
        print('FAIL run.py: no test matches %r' % (pattern,), flush=True)
        return 1
    failed = 0
    for full, fn in tests:
        common.NOTES.clear()
        t0 = time.monotonic()
        if isinstance(fn, BaseException):
            err, tb = fn, ''.join(traceback.format_exception(type(fn), fn, fn.__traceback__))
        else:
            err = tb = None
            try:
                fn()
            except BaseException as e:   # noqa: BLE001 - anything a test raises is a failure
                if isinstance(e, KeyboardInterrupt):
                    raise
                err, tb = e, traceback.format_exc()
        secs = time.monotonic() - t0
        notes = (' -- ' + '; '.join(common.NOTES)) if common.NOTES else ''
        if err is None:
            print('ok %s (%.2fs)%s' % (full, secs, notes), flush=True)
        else:
            failed += 1
            print('FAIL %s: %s%s' % (full, one_line(err), notes), flush=True)
            sys.stdout.write(indent(tb))
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
