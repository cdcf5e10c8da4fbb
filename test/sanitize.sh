#!/usr/bin/env bash
# test/sanitize.sh [asan|valgrind] [SCENARIO_FILTER]: the pg_regress suites
# and the scenario tests against a server that runs line_status under a
# sanitizer, then the sanitizer's findings (target: 0).  As root.
#
#   asan      (default) line_status built with gcc -fsanitize=address,undefined
#             (AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer;
#             alignment checks off), loaded into an uninstrumented postgres
#             that has the ASan runtime preloaded (plus
#             test/sanitize/asan_first.c, without which Debian's postgres hangs
#             before main).  Only line_status's own code is instrumented; every
#             malloc/free of the process goes through ASan.  ~2.5 minutes for
#             everything.  The two memory-growth checks of test_faults fail
#             here by design: ASan's quarantine (64 MB) keeps freed memory.
#   valgrind  line_status built normally (-O1 -g), every server process under
#             valgrind memcheck (--trace-children=yes, --track-origins=yes,
#             definite leaks, suppressions in test/sanitize/valgrind.supp).
#             Covers PostgreSQL, libcurl and OpenSSL too (uninitialised reads,
#             invalid accesses, leaks of malloc'd memory).  Much slower;
#             timing-bound scenario tests fail there.
#
# Nothing is installed into /usr/lib/postgresql or /usr/share/postgresql: the
# PostgreSQL installation is copied to $LS_WORK/pg (the binaries find their
# share and lib directories relative to themselves), the source tree to
# $LS_WORK/src, and the extension is built and installed there.  In the copy,
# bin/postgres is a small wrapper that starts the real binary (postgres.real)
# with the ASan runtime preloaded or under valgrind; it passes its own path
# as argv[0], so postmaster.opts names the wrapper and a pg_ctl restart (as
# test_worker does, with /usr/lib/postgresql/15/bin/pg_ctl) comes back
# sanitized too.  The cluster and the stand-in come from test/lib.sh.
#
# SCENARIO_FILTER is run.py's argument (a substring of "<module>.<name>");
# "none" skips the scenario tests, "all" (default) runs them all.
# LS_KEEP=1 keeps $LS_WORK (logs, sanitizer reports) afterwards.
#
# Prints the tests' "N passed, M failed" lines, then (test/sanitize/report.py)
#     sanitizer findings: N in line_status (...); M elsewhere (...)
# and exits 0 only when there is no finding in line_status and no server
# process died (findings in PostgreSQL, libcurl or OpenSSL themselves are
# listed and counted apart; failed tests are listed, but do not decide the
# exit status, since timing and memory bounds do not hold under a sanitizer).
source "$(dirname "$0")/lib.sh"
set +e

MODE=${1:-asan}
FILTER=${2:-all}
case "$MODE" in asan|valgrind) ;; *) echo "usage: $0 [asan|valgrind] [SCENARIO_FILTER|all|none]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "run as root (it runs PostgreSQL as postgres)" >&2; exit 2; }

T_START=$(date +%s)
phase() { ls_log "$* ($(( $(date +%s) - T_START )) s)"; }

ls_install_packages
if [ "$MODE" = valgrind ] && ! command -v valgrind >/dev/null; then
	echo "valgrind is not installed: add the Debian package valgrind to ls_install_packages" >&2
	exit 2
fi

LS_WORK=$(mktemp -d /tmp/line_status_sanitize.XXXXXX)
chmod 755 "$LS_WORK"
export LS_WORK
trap ls_cleanup EXIT
REPORTS=$LS_WORK/reports
mkdir -p "$REPORTS"
chmod 777 "$REPORTS"

# ---------------------------------------------------------------- the copies
phase "copying PostgreSQL 15 to $LS_WORK/pg"
PRIV=$LS_WORK/pg
mkdir -p "$PRIV/usr/lib/postgresql" "$PRIV/usr/share/postgresql"
cp -a /usr/lib/postgresql/15 "$PRIV/usr/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$PRIV/usr/share/postgresql/"
# whatever line_status the machine has installed is not what we test
rm -f "$PRIV/usr/lib/postgresql/15/lib/line_status.so" \
	"$PRIV/usr/share/postgresql/15/extension/line_status"*
rm -rf "$PRIV/usr/lib/postgresql/15/lib/bitcode/line_status"*
# the headers are only read: the copy points at the real ones
mkdir -p "$PRIV/usr/include"
ln -s /usr/include/postgresql "$PRIV/usr/include/postgresql"
PG_BIN=$PRIV/usr/lib/postgresql/15/bin
PRIV_PG_CONFIG=$PG_BIN/pg_config
[ "$("$PRIV_PG_CONFIG" --pkglibdir)" = "$PRIV/usr/lib/postgresql/15/lib" ] || {
	echo "the copied pg_config does not point into the copy: $("$PRIV_PG_CONFIG" --pkglibdir)" >&2
	exit 2
}

SRC=$LS_WORK/src
mkdir -p "$SRC"
(cd "$LS_ROOT" && tar cf - --exclude=.git --exclude=results --exclude='*.o' --exclude='*.so' \
	--exclude='*.bc' --exclude=regression.diffs --exclude=regression.out --exclude=__pycache__ .) |
	(cd "$SRC" && tar xf -)
chown -R postgres "$SRC"			# pg_regress writes results/ there

# ---------------------------------------------------------------- the build
phase "building line_status ($MODE)"
if [ "$MODE" = asan ]; then
	SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize=alignment"
	# -fno-sanitize=alignment: PostgreSQL's own macros read packed catalog
	# and varlena data unaligned by design; everything else of UBSan is on.
	BUILD_OPTS=(COPT="$SAN_FLAGS -g -O1")
else
	BUILD_OPTS=(COPT="-g -O1")
fi
if ! make -C "$SRC" -s PG_CONFIG="$PRIV_PG_CONFIG" with_llvm=no "${BUILD_OPTS[@]}" >"$LS_WORK/build.log" 2>&1 ||
	! make -C "$SRC" -s PG_CONFIG="$PRIV_PG_CONFIG" with_llvm=no "${BUILD_OPTS[@]}" install >>"$LS_WORK/build.log" 2>&1; then
	cat "$LS_WORK/build.log" >&2
	echo "build failed" >&2
	exit 2
fi

# ---------------------------------------------------------------- the wrapper
mv "$PG_BIN/postgres" "$PG_BIN/postgres.real"
if [ "$MODE" = asan ]; then
	ASAN_RT=$(gcc -print-file-name=libasan.so)
	ASAN_RT=$(readlink -f "$ASAN_RT")
	# see test/sanitize/asan_first.c: without it postgres hangs before main()
	gcc -shared -fPIC -O1 -Wl,-z,initfirst "$LS_ROOT/test/sanitize/asan_first.c" \
		-o "$PRIV/asan_first.so" || exit 2
	cat >"$PG_BIN/postgres" <<EOF
#!/bin/bash
# test/sanitize.sh: the real postgres with the ASan runtime preloaded
export LD_PRELOAD=$ASAN_RT:$PRIV/asan_first.so\${LD_PRELOAD:+:\$LD_PRELOAD}
export ASAN_OPTIONS=log_path=$REPORTS/asan:detect_leaks=1:malloc_context_size=30:quarantine_size_mb=64:detect_stack_use_after_return=0:handle_segv=1:allow_user_segv_handler=1
export LSAN_OPTIONS=exitcode=0:suppressions=$LS_ROOT/test/sanitize/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=log_path=$REPORTS/ubsan:print_stacktrace=1:halt_on_error=0
exec -a "\$0" $PG_BIN/postgres.real "\$@"
EOF
else
	# Under valgrind the guest's argv[0] is the path valgrind was given, so
	# valgrind runs this same script (bash, briefly, under valgrind), which
	# then execs the real binary with argv[0] = this script: postmaster.opts
	# names the wrapper, and a pg_ctl restart comes back under valgrind.
	cat >"$PG_BIN/postgres" <<EOF
#!/bin/bash
# test/sanitize.sh: the real postgres under valgrind memcheck; "postgres -V"
# and "-C" (asked by pg_ctl and initdb) run as they are
case "\$1" in -V|--version|-C|--describe-config|--single|--boot) exec -a "\$0" $PG_BIN/postgres.real "\$@" ;; esac
if [ -n "\${LS_UNDER_VALGRIND:-}" ]; then
	exec -a "\$0" $PG_BIN/postgres.real "\$@"
fi
export LS_UNDER_VALGRIND=1
exec valgrind --quiet --trace-children=yes --track-origins=yes --num-callers=40 \\
	--error-markers=VALGRIND-ERROR-BEGIN,VALGRIND-ERROR-END \\
	--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
	--suppressions=$LS_ROOT/test/sanitize/valgrind.supp --gen-suppressions=all \\
	--log-file=$REPORTS/valgrind.%p.log "\$0" "\$@"
EOF
fi
chmod 755 "$PG_BIN/postgres"

# ---------------------------------------------------------------- the cluster
phase "starting the stand-in and the cluster"
ls_make_certs
ls_start_standin || exit 2
# valgrind: a slower server needs longer waits than pg_ctl's default
if [ "$MODE" = valgrind ]; then
	export PGCTLTIMEOUT=300
	LS_EXTRA_CONF="jit = off"
else
	LS_EXTRA_CONF="jit = off"
fi
ls_start_cluster || { cat "$LS_WORK/postgres.log" >&2; exit 2; }
ls_configure >/dev/null
# Is it really sanitized?  The library loaded into the server must be the
# one built here (and, for asan, instrumented, with the runtime mapped).
PM_PID=$(head -1 "$LS_PGDATA/postmaster.pid")
grep -q "$PRIV/usr/lib/postgresql/15/lib/line_status.so" "/proc/$PM_PID/maps" ||
	{ echo "the postmaster has not loaded $PRIV/.../line_status.so" >&2; exit 2; }
if [ "$MODE" = asan ]; then
	grep -q libasan "/proc/$PM_PID/maps" ||
		{ echo "the postmaster does not have the ASan runtime loaded" >&2; exit 2; }
	# (no grep -q: with pipefail, nm's SIGPIPE would fail the pipeline)
	nm -D "$PRIV/usr/lib/postgresql/15/lib/line_status.so" | grep __asan_report >/dev/null ||
		{ echo "line_status.so is not instrumented" >&2; exit 2; }
else
	grep -q vgpreload_memcheck "/proc/$PM_PID/maps" ||
		{ echo "the postmaster is not running under valgrind" >&2; exit 2; }
fi

# postmaster.opts names the binary the postmaster runs as.  Under valgrind
# that is postgres.real (valgrind gives its guest the path it was given), so a
# pg_ctl restart (test_worker does one) would bring the server back without
# valgrind: keep the file naming the wrapper.  Written in place, so that it
# stays the postgres user's.
OPTS_FIXER=
if [ "$MODE" = valgrind ]; then
	(
		while sleep 0.5; do
			f=$LS_PGDATA/postmaster.opts
			[ -f "$f" ] || continue
			old=$(cat "$f" 2>/dev/null) || continue
			new=${old/#$PG_BIN\/postgres.real /$PG_BIN/postgres }
			[ "$new" = "$old" ] || printf '%s\n' "$new" >"$f"
		done
	) &
	OPTS_FIXER=$!
	trap '[ -n "$OPTS_FIXER" ] && kill "$OPTS_FIXER" 2>/dev/null; ls_cleanup' EXIT
fi

# sanitized: is the running postmaster (PID in postmaster.pid) still under
# the sanitizer?
sanitized() {
	local pid
	pid=$(head -1 "$LS_PGDATA/postmaster.pid" 2>/dev/null) || return 1
	if [ "$MODE" = asan ]; then
		grep -q libasan "/proc/$pid/maps" 2>/dev/null
	else
		grep -q vgpreload_memcheck "/proc/$pid/maps" 2>/dev/null
	fi
}

passed=0
failed=0

# ---------------------------------------------------------------- pg_regress
phase "pg_regress suites"
curl -s -X POST "$STANDIN_URL/__standin/reset" >/dev/null
runuser -u postgres -- env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER" \
	make -C "$SRC" PG_CONFIG="$PRIV_PG_CONFIG" with_llvm=no installcheck >"$LS_WORK/regress.log" 2>&1
grep -E '^test |^ok |^not ok ' "$LS_WORK/regress.log"
r_ok=$(grep -cE '^test .*\.\.\. ok' "$LS_WORK/regress.log")
r_bad=$(grep -cE '^test .*\.\.\. FAILED' "$LS_WORK/regress.log")
if [ "$r_ok" -eq 0 ] && [ "$r_bad" -eq 0 ]; then
	cat "$LS_WORK/regress.log"
	r_bad=1
fi
if [ "$r_bad" -gt 0 ] && [ -f "$SRC/regression.diffs" ]; then
	head -100 "$SRC/regression.diffs"
fi
echo "pg_regress: $r_ok passed, $r_bad failed"
passed=$((passed + r_ok))
failed=$((failed + r_bad))

# ---------------------------------------------------------------- scenarios
if [ "$FILTER" != none ]; then
	phase "scenario tests"
	if [ "$FILTER" = all ]; then
		$PY "$LS_ROOT/test/scenarios/run.py" | tee "$LS_WORK/scenarios.log"
	else
		$PY "$LS_ROOT/test/scenarios/run.py" "$FILTER" | tee "$LS_WORK/scenarios.log"
	fi
	s_ok=$(grep -cE '^ok ' "$LS_WORK/scenarios.log")
	s_bad=$(grep -cE '^FAIL ' "$LS_WORK/scenarios.log")
	if [ "$s_ok" -eq 0 ] && [ "$s_bad" -eq 0 ]; then
		s_bad=1
	fi
	echo "scenarios: $s_ok passed, $s_bad failed"
	passed=$((passed + s_ok))
	failed=$((failed + s_bad))
fi

unsanitized=0
if ! sanitized; then
	unsanitized=1
	echo "WARNING: the server now runs without $MODE (restarted behind the wrapper's back): the tests after that restart were not sanitized"
fi

# Let the server shut down cleanly, so that every process's exit-time
# report (LeakSanitizer, valgrind's leak check) is written.
phase "stopping the server"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$LS_PGDATA" -m fast -t 300 -w stop >/dev/null 2>&1
sleep 1

# ---------------------------------------------------------------- findings
phase "reading the reports"
# A crash: a process killed by a signal (an ASan report aborts), or a
# backend exiting with an error code, which makes the postmaster reset all.
# (Background workers exit with code 1 when told to stop: that is normal.)
crashes=$(grep -cE 'terminated by signal|was terminated by exception|terminating any other active server processes' "$LS_WORK/postgres.log")
$PY "$LS_ROOT/test/sanitize/report.py" "$MODE" "$REPORTS" "$LS_WORK/postgres.log" | tee "$LS_WORK/findings.txt"
ours=$(sed -n 's/^sanitizer findings: \([0-9]*\).*/\1/p' "$LS_WORK/findings.txt")
ours=${ours:-1}

echo "tests under $MODE: $passed passed, $failed failed"
echo "server processes that died: $crashes"
echo "time: $(( $(date +%s) - T_START )) s"
[ -n "${LS_KEEP:-}" ] && echo "kept: $LS_WORK"
[ -n "$OPTS_FIXER" ] && kill "$OPTS_FIXER" 2>/dev/null
[ "$ours" -eq 0 ] && [ "$crashes" -eq 0 ] && [ "$unsanitized" -eq 0 ]
