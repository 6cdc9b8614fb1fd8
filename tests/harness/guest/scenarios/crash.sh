#!/bin/bash
# crash: a debug option triggers a deliberate fault -> fault report on the console, reason
# crash. Twice: a wild write (page fault), and a runaway recursion that must hit the stack
# guard page (and still be reported, from the fault handler's own IST stack).
. /guest/lib.sh
for kind in pagefault stack; do
    N=pc-crash-$kind
    portcullis_start $N "debug-crash=$kind"
    wait_console $N 'FATAL: exception #PF' 30 || fail "$kind: no page-fault report on the console"
    wait_gone $N 10 || fail "$kind: domain still alive after the fault"
    sleep 0.5
    r=$(shutdown_reason $N)
    [ "$r" = 3 ] || fail "$kind: shutdown reason code '$r', want 3 (crash)"
    grep -q "cr2=0x" "$CONSOLE_DIR/guest-$N.log" || fail "$kind: fault report lacks cr2"
    grep -Eq "stack 0x|stack dump skipped" "$CONSOLE_DIR/guest-$N.log" || fail "$kind: fault report lacks the stack part"
    echo "$kind: $(grep -m1 'FATAL: exception' "$CONSOLE_DIR/guest-$N.log")"
done
# The stack overflow must have faulted in the guard page, not somewhere else.
guard=$(sed -n 's/.*stack guard page at \(0x[0-9a-f]*\).*/\1/p' "$CONSOLE_DIR/guest-pc-crash-stack.log" | head -1)
cr2=$(sed -n 's/.*cr2=\(0x[0-9a-f]*\).*/\1/p' "$CONSOLE_DIR/guest-pc-crash-stack.log" | head -1)
[ -n "$guard" ] && [ -n "$cr2" ] || fail "stack: guard page or cr2 not logged"
[ $(( cr2 >= guard && cr2 < guard + 4096 )) = 1 ] || fail "stack: cr2 $cr2 not in the guard page at $guard"
