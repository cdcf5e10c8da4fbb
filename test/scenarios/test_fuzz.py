"""Scenario test: a short, bounded fuzz run as part of the suite.

One test: the libFuzzer target of the phone normaliser (test/fuzz/run.sh,
8 s of fuzzing after a build of about a second), then the end-to-end fuzz of
the answer reader (test/fuzz/fuzz_reader_e2e.py, 300 lookups with mutated
Twilio answers from a local server) against this cluster.  Both must end
with 0 crashes.  Nothing is installed here: without clang the test fails,
since test/lib.sh is what installs packages (clang-14, libclang-rt-14-dev).
The longer runs are test/fuzz/run.sh [SECONDS] and fuzz_reader_e2e.py
--count N by hand.
"""
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

from common import env, note

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
FUZZ = os.path.join(ROOT, 'test', 'fuzz')
PHONE_SECONDS = 8
E2E_COUNT = 300


def _tail(text, n=30):
    return '\n'.join(text.strip().splitlines()[-n:])


def test_fuzz_phone_and_reader():
    for v in ('PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE'):
        env(v)
    clang = shutil.which('clang-14') or shutil.which('clang')
    assert clang is not None, ('clang is not installed: test/lib.sh must install the Debian '
                               'packages clang-14 and libclang-rt-14-dev')

    # 1. libFuzzer: phone_normalise and friends, bounded.
    out = tempfile.mkdtemp(prefix='lsfuzz.', dir=os.environ.get('LS_WORK') or None)
    try:
        r = subprocess.run(['bash', os.path.join(FUZZ, 'run.sh'), str(PHONE_SECONDS), 'fuzz_phone'],
                           env=dict(os.environ, LS_FUZZ_OUT=out, CLANG=clang),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=PHONE_SECONDS + 120)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    m = re.search(r'^fuzz_phone: (\d+) execs, (\d+) crashes', r.stdout, re.M)
    assert m is not None, 'test/fuzz/run.sh printed no result (exit %d):\n%s' % (r.returncode, _tail(r.stdout))
    execs, crashes = int(m.group(1)), int(m.group(2))
    note('fuzz_phone %d execs in %d s, %d crashes' % (execs, PHONE_SECONDS, crashes))
    assert crashes == 0 and r.returncode == 0, 'fuzz_phone crashed:\n%s' % _tail(r.stdout, 60)
    assert execs > 1000, 'fuzz_phone ran only %d inputs:\n%s' % (execs, _tail(r.stdout))

    # 2. The reader inside this cluster's backends, with mutated answers.
    seed = random.randrange(2 ** 31)
    r = subprocess.run([sys.executable, os.path.join(FUZZ, 'fuzz_reader_e2e.py'),
                        '--count', str(E2E_COUNT), '--seed', str(seed), '--replay'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    m = re.search(r'^fuzz_reader_e2e: (\d+) executions, (\d+) crashes', r.stdout, re.M)
    assert m is not None, 'fuzz_reader_e2e.py printed no result (exit %d):\n%s' % (r.returncode, _tail(r.stdout))
    n, crashes = int(m.group(1)), int(m.group(2))
    figures = re.search(r'internal errors \(XX\): (\d+), hangs: (\d+), mismatches: (\d+), '
                        r'invalid UTF-8: (\d+), foreign errors: (\d+)', r.stdout)
    note('reader e2e %d lookups (seed %d), %d crashes%s' % (
        n, seed, crashes,
        ', %s internal errors, %s hangs, %s mismatches, %s invalid UTF-8, %s foreign errors'
        % figures.groups() if figures else ''))
    assert crashes == 0, 'the backend crashed (seed %d):\n%s' % (seed, _tail(r.stdout, 60))
    assert r.returncode == 0, 'fuzz_reader_e2e.py failed (seed %d):\n%s' % (seed, _tail(r.stdout, 60))
    assert n >= E2E_COUNT, 'only %d of %d lookups ran' % (n, E2E_COUNT)
