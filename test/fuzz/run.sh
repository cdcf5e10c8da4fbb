#!/usr/bin/env bash
# test/fuzz/run.sh [SECONDS] [TARGET...]: build the libFuzzer targets with
# clang (-fsanitize=fuzzer,address,undefined) into a temporary directory
# (never into the repository), replay the saved crash inputs of
# test/fuzz/crashes/ as regression tests, then fuzz each target for SECONDS
# (default 20) from a copy of its seed corpus test/fuzz/corpus/<name>/.
# SECONDS = 0: only replay the seeds and the saved crash inputs.
#
# Targets: fuzz_phone (src/phone.c), fuzz_body (check_json's checks over the
# real libpgcommon.a JSON parser).  Default: both.  Prints one line each:
#     fuzz_phone: N execs, C crashes
# and exits 1 if anything crashed (a sanitizer report, a failed invariant,
# a leak, a timeout or running out of memory), 2 if it cannot build.
# A crash input is copied to test/fuzz/crashes/<target>-<name>, where the
# next run replays it.
#
# Needs clang-14 and libclang-rt-14-dev (libFuzzer and the sanitizer
# runtimes) and postgresql-server-dev-15 (for fuzz_body); installs nothing.
# Environment: LS_FUZZ_OUT=DIR to build and keep everything there (default:
# a fresh /tmp/lsfuzz.XXXXXX, removed afterwards), CLANG to pick the compiler.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SECS=${1:-20}
shift 2>/dev/null || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_phone fuzz_body)
case "$SECS" in ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

CLANG=${CLANG:-}
if [ -z "$CLANG" ]; then
	for c in clang-14 clang; do
		command -v "$c" >/dev/null 2>&1 && { CLANG=$c; break; }
	done
fi
if [ -z "$CLANG" ]; then
	echo "fuzz: clang not found: install clang-14 and libclang-rt-14-dev" >&2
	exit 2
fi

if [ -n "${LS_FUZZ_OUT:-}" ]; then
	OUT=$LS_FUZZ_OUT
	mkdir -p "$OUT"
else
	OUT=$(mktemp -d /tmp/lsfuzz.XXXXXX)
	trap 'rm -rf "$OUT"' EXIT
fi

PG_INC=$(pg_config --includedir-server 2>/dev/null || echo /usr/include/postgresql/15/server)
PG_LIB=/usr/lib/postgresql/15/lib
# -fwrapv -fno-strict-aliasing: what PostgreSQL (and so PGXS) compiles the
# extension with; undefined behaviour can differ without them (labs(LONG_MIN)
# is folded one way by clang -O1 and comes out another in the server).
CFLAGS=(-g -O1 -fno-omit-frame-pointer -fwrapv -fno-strict-aliasing
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Wall -Wextra)

build() {
	local t=$1
	case "$t" in
		fuzz_phone)
			"$CLANG" "${CFLAGS[@]}" -Werror -I"$ROOT/src" \
				"$HERE/fuzz_phone.c" "$ROOT/src/phone.c" -o "$OUT/fuzz_phone" ;;
		fuzz_body)
			# twilio.c's helpers with gcc and PostgreSQL's flags, as the
			# server has them (see fuzz_body_twilio.c); FRONTEND: the
			# libpgcommon.a build of src/common (jsonapi.c, wchar.c),
			# libpgport.a for what it needs (pg_snprintf, ...).
			gcc -O2 -fwrapv -fno-strict-aliasing -fPIC -Wall -DFRONTEND -I"$PG_INC" \
				-c "$HERE/fuzz_body_twilio.c" -o "$OUT/fuzz_body_twilio.o" &&
			"$CLANG" "${CFLAGS[@]}" -Wno-unused-parameter -Wno-ignored-attributes \
				-DFRONTEND -I"$PG_INC" "$HERE/fuzz_body.c" "$OUT/fuzz_body_twilio.o" \
				"$PG_LIB/libpgcommon.a" "$PG_LIB/libpgport.a" -o "$OUT/fuzz_body" ;;
		*)
			echo "fuzz: unknown target $t" >&2
			return 1 ;;
	esac
}

# options per target: fuzz_phone inputs past 64 bytes are refused at once;
# fuzz_body stays at 4096 bytes (Twilio's answers are ~500): longer inputs
# only slow it down (the nesting check bounds the parser's recursion, which
# in this frontend build has no stack-depth check).
options() {
	case "$1" in
		fuzz_phone) echo "-max_len=128 -dict=$HERE/phone.dict" ;;
		fuzz_body) echo "-max_len=4096 -dict=$HERE/body.dict" ;;
	esac
}

corpus_name() {
	case "$1" in
		fuzz_phone) echo phone ;;
		fuzz_body) echo body ;;
	esac
}

# fuzz_body: the frontend JSON parser's error paths drop palloc'd copies
# (see fuzz_body.lsan.supp); every target runs with it, it matches nothing
# in fuzz_phone.
export LSAN_OPTIONS=suppressions=$HERE/fuzz_body.lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}

status=0
for t in "${TARGETS[@]}"; do
	t0=$(date +%s%N)
	if ! build "$t" >"$OUT/$t.build.log" 2>&1; then
		cat "$OUT/$t.build.log" >&2
		echo "$t: build failed"
		status=2
		continue
	fi
	build_ms=$((($(date +%s%N) - t0) / 1000000))
	build_s=$((build_ms / 1000)).$((build_ms % 1000 / 100))

	# 1. Saved crash inputs: each must now run clean.
	regress=0
	regress_bad=0
	shopt -s nullglob
	saved=("$HERE/crashes/$t"-*)
	shopt -u nullglob
	for f in "${saved[@]}"; do
		regress=$((regress + 1))
		if ! "$OUT/$t" $(options "$t") -runs=1 "$f" >"$OUT/$t.regress.log" 2>&1; then
			regress_bad=$((regress_bad + 1))
			echo "$t: saved crash input $(basename "$f") still crashes:" >&2
			grep -E 'ERROR|invariant|runtime error|SUMMARY' "$OUT/$t.regress.log" | head -5 >&2
		fi
	done

	if [ "$SECS" -eq 0 ]; then
		# replay only: the seed corpus and the saved crash inputs, once each
		"$OUT/$t" $(options "$t") -runs=0 "$HERE/corpus/$(corpus_name "$t")" >"$OUT/$t.log" 2>&1
		rc=$?
		[ "$rc" -eq 0 ] || regress_bad=$((regress_bad + 1))
		echo "$t: $(ls "$HERE/corpus/$(corpus_name "$t")" | wc -l) seeds and $regress saved inputs replayed, $regress_bad crashes"
		[ "$regress_bad" -eq 0 ] || status=1
		continue
	fi

	# 2. Fuzz from a copy of the seed corpus (new inputs go to the copy).
	corpus=$OUT/corpus-$t
	mkdir -p "$corpus" "$OUT/artifacts"
	rm -f "$OUT/artifacts/$t"-*			# a kept LS_FUZZ_OUT: only this run's
	cp "$HERE/corpus/$(corpus_name "$t")"/* "$corpus"/ 2>/dev/null || true
	log=$OUT/$t.log
	"$OUT/$t" $(options "$t") -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t-" "$corpus" >"$log" 2>&1
	rc=$?

	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	if [ -z "$execs" ]; then
		# a crash ends the run before the final stats: the last status line
		execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
	fi
	shopt -s nullglob
	artifacts=("$OUT/artifacts/$t"-*)
	shopt -u nullglob
	crashes=${#artifacts[@]}
	if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
		crashes=1				# died without leaving an input
	fi
	crashes=$((crashes + regress_bad))
	echo "$t: ${execs:-0} execs, $crashes crashes ($(printf '%s' "$SECS") s fuzzing, build ${build_s} s, $regress saved inputs replayed, corpus $(ls "$corpus" | wc -l) files)"
	if [ "$crashes" -gt 0 ]; then
		status=1
		mkdir -p "$HERE/crashes"
		for a in "${artifacts[@]}"; do
			if [ "$regress_bad" -gt 0 ]; then
				# most likely the same bug again, in another input
				echo "$t: crash input not saved (saved inputs still crash: fix those first): $a"
				continue
			fi
			cp "$a" "$HERE/crashes/"
			echo "$t: crash input saved: test/fuzz/crashes/$(basename "$a")"
		done
		grep -E -A12 'ERROR: |invariant failed|runtime error|deadly signal' "$log" | head -40 >&2
	fi
done
exit $status
