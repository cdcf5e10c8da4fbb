#!/usr/bin/python3
"""Summarise the sanitizer reports of a test/sanitize.sh run.

    report.py asan|valgrind REPORT_DIR [SERVER_LOG]

asan: REPORT_DIR/asan.<pid> (AddressSanitizer and LeakSanitizer) and
REPORT_DIR/ubsan.<pid> (UndefinedBehaviorSanitizer).  valgrind:
REPORT_DIR/valgrind.<pid>.log, errors between VALGRIND-ERROR-BEGIN/END.

Each report is "ours" when, below the allocator, libc and other library
frames, its first frame is in line_status (line_status.so, one of its source
files or functions), or in PostgreSQL called straight from line_status; else
it is PostgreSQL's, libcurl's, OpenSSL's, ... and counted apart.  Identical reports (same kind,
same top frames) are merged.  Ends with one line:
    sanitizer findings: N in line_status (...); M elsewhere
"""
import collections
import glob
import os
import re
import sys

# a frame in line_status: its library, one of its source files (ASan prints
# them relative to the build directory, valgrind by base name), or one of its
# functions (ls_*, phone_*, line_status_*)
OURS = re.compile(r'line_status\.so|(^|[\s/(])(src/)?(bulk|cache|http|line_status|phone|settings|trigger|'
                  r'twilio|worker)\.c:\d|\bin (ls|phone|line_status)_\w+|: (ls|phone|line_status)_\w+ \(')
FRAME = re.compile(r'^\s*(#\d+ 0x[0-9a-f]+ (?:in (\S+)|\s*\((\S+)\))|(?:at|by) 0x[0-9A-F]+: (\S+))')


PG = re.compile(r'postgres\.real|/bin/postgres\b')


def frames(lines):
    """The frames of the report's first stack (not of the "allocated by" or
    "created by" stacks after it)."""
    out = []
    for ln in lines:
        m = FRAME.match(ln)
        if m:
            out.append((m.group(2) or m.group(3) or m.group(4), ln.strip()))
        elif out:
            break
    return out


def is_ours(fr):
    """Below the allocator, libc and library frames, is the first frame in
    line_status, or in PostgreSQL called straight from line_status (within
    two frames)?"""
    for i, (_, ln) in enumerate(fr):
        if OURS.search(ln):
            return True
        if PG.search(ln):
            return any(OURS.search(x[1]) for x in fr[i + 1:i + 3])
    return False


def asan_reports(path):
    """(kind, title, lines) from one asan.<pid> file."""
    text = open(path, errors='replace').read().splitlines()
    i = 0
    while i < len(text):
        ln = text[i]
        if 'ERROR: AddressSanitizer' in ln or 'ERROR: UndefinedBehaviorSanitizer' in ln:
            j = i + 1
            while j < len(text) and not text[j].startswith('SUMMARY:'):
                j += 1
            yield ('asan', re.sub(r'^==\d+==', '', ln).strip(), text[i:j + 1])
            i = j + 1
        elif 'ERROR: LeakSanitizer' in ln:
            j = i + 1
            while j < len(text) and not text[j].startswith('SUMMARY:'):
                if re.match(r'^(Direct|Indirect) leak of', text[j]):
                    k = j + 1
                    while k < len(text) and text[k].strip():
                        k += 1
                    yield ('leak', text[j].strip(), text[j:k])
                    j = k
                else:
                    j += 1
            i = j + 1
        else:
            i += 1


def ubsan_reports(path):
    text = open(path, errors='replace').read().splitlines()
    for i, ln in enumerate(text):
        if 'runtime error:' in ln:
            j = i + 1
            while j < len(text) and FRAME.match(text[j]):
                j += 1
            yield ('ubsan', ln.strip(), text[i:j])


def valgrind_reports(path):
    text = open(path, errors='replace').read().splitlines()
    i = 0
    while i < len(text):
        if 'VALGRIND-ERROR-BEGIN' in text[i]:
            j = i + 1
            while j < len(text) and 'VALGRIND-ERROR-END' not in text[j]:
                j += 1
            body = [re.sub(r'^==\d+== ?', '', x) for x in text[i + 1:j]]
            body = [x for x in body if x.strip()]
            title = body[0] if body else '?'
            # the suppression valgrind generated (--gen-suppressions=all) is not part of the error
            cut = next((k for k, x in enumerate(body) if x.startswith('{')), len(body))
            yield ('valgrind', title, body[:cut])
            i = j + 1
        else:
            i += 1


def main(argv):
    mode, rdir = argv[1], argv[2]
    found = []
    if mode == 'asan':
        for p in sorted(glob.glob(os.path.join(rdir, 'asan.*'))):
            found += list(asan_reports(p))
        for p in sorted(glob.glob(os.path.join(rdir, 'ubsan.*'))):
            found += list(ubsan_reports(p))
    else:
        for p in sorted(glob.glob(os.path.join(rdir, 'valgrind.*.log'))):
            found += list(valgrind_reports(p))

    merged = collections.OrderedDict()
    for kind, title, lines in found:
        fr = frames(lines)
        ours = is_ours(fr) or bool(OURS.search(title))
        sig = (kind, re.sub(r'0x[0-9a-f]+|\d[\d,]*', 'N', title),
               tuple(f[0] for f in fr[:4]))
        if sig not in merged:
            merged[sig] = {'kind': kind, 'title': title, 'frames': fr, 'ours': ours, 'count': 0}
        merged[sig]['count'] += 1

    n_ours = collections.Counter()
    n_other = collections.Counter()
    for r in merged.values():
        (n_ours if r['ours'] else n_other)[r['kind']] += 1
        print('%s %s (x%d, %s):' % ('FINDING' if r['ours'] else 'elsewhere', r['kind'], r['count'],
                                     'line_status' if r['ours'] else 'not in line_status'))
        print('    ' + r['title'][:300])
        for _, ln in r['frames'][:12]:
            print('      ' + ln[:200])
    total_ours = sum(n_ours.values())
    total_other = sum(n_other.values())
    files = len(glob.glob(os.path.join(rdir, '*')))
    print('sanitizer findings: %d in line_status (%s); %d elsewhere (%s); %d report files' % (
        total_ours, ', '.join('%s %d' % kv for kv in sorted(n_ours.items())) or 'none',
        total_other, ', '.join('%s %d' % kv for kv in sorted(n_other.items())) or 'none', files))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
