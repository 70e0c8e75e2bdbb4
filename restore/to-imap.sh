#!/bin/bash
# Copies users' mail from a mailkeep backup, served by Dovecot (`mailkeep serve-config
# dovecot`), into their mailboxes at a new provider (Google Workspace, Microsoft 365, any
# IMAP host) with isync's mbsync, one Channel per folder: INBOX to INBOX, Sent to the
# provider's sent folder (--sent), Chats to --chats. Dates are kept (the backup's
# INTERNALDATE, CopyArrivalDate), nothing is deleted on either side, and mbsync's sync state
# (--state) makes a second run copy only what the first did not: interrupted or throttled,
# just run it again.
#
# Messages over the provider's size limit (--max-size) cannot be uploaded: mbsync puts a
# small "[placeholder] <subject>" message in their place, and this script lists each one
# (folder, size as IMAP counts it, file in the backup) in STATE/USER/too-large.txt, so that
# they can be handed over otherwise (`mailkeep export`). Per user one result line; the exit
# status is 0 only when every message of every user was copied, 1 when any was not (too
# large, refused, or missing on the target by mbsync's state), 2 for bad usage (one line).
#
# Usage:
#   restore/to-imap.sh [options] ROOT USER|--all HOST
# Options:
#   --logins FILE            the target logins: "user<TAB>login<TAB>password" lines (login at
#                            the provider, e.g. alice@example.com; an app password for
#                            Gmail or Microsoft 365). Required.
#   --source-passwords FILE  the passwords `mailkeep serve-config dovecot` printed
#                            ("user<TAB>password" lines; # lines are skipped). Required.
#   --source-host H          the Dovecot serving the backup (127.0.0.1)
#   --source-port N          its IMAP port (143)
#   --port N                 the target's IMAP port (993; 143 with --tls starttls or none)
#   --tls imaps|starttls|none   how to reach the target (imaps)
#   --sent NAME              the provider's sent folder ("Sent Items"; Gmail: "[Gmail]/Sent Mail")
#   --chats NAME             where the Chats folder goes (Chats)
#   --max-size SIZE          the provider's message size limit: digits, optionally with k, m
#                            or g (25m)
#   --state DIR              mbsync's state and the lists, kept between runs
#                            (${XDG_STATE_HOME:-$HOME/.local/state}/mailkeep-restore; never
#                            inside ROOT, which serve-config and check would see);
#                            STATE/USER/mbsyncrc holds both passwords (mode 0600): remove
#                            STATE when the move is done
#   --accounts FILE          with --all: the users (mailkeep's accounts file, lsearch);
#                            default: every user Maildir in ROOT (lost+found, dot
#                            directories and directories without new/, cur/ and tmp/ are
#                            no users)
set -uo pipefail

usage() { echo "usage: $0 [options] ROOT USER|--all HOST (see the top of this script)" >&2; exit 2; }
die() { echo "to-imap: $*" >&2; exit 2; }

LOGINS= SRC_PW= SRC_HOST=127.0.0.1 SRC_PORT=143 PORT= TLS=imaps SENT="Sent Items" CHATS=Chats
MAX_SIZE=25m STATE=${XDG_STATE_HOME:-${HOME:-/root}/.local/state}/mailkeep-restore ACCOUNTS= ALL=0
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --logins) LOGINS=${2:?}; shift 2 ;;
        --source-passwords) SRC_PW=${2:?}; shift 2 ;;
        --source-host) SRC_HOST=${2:?}; shift 2 ;;
        --source-port) SRC_PORT=${2:?}; shift 2 ;;
        --port) PORT=${2:?}; shift 2 ;;
        --tls) TLS=${2:?}; shift 2 ;;
        --sent) SENT=${2:?}; shift 2 ;;
        --chats) CHATS=${2:?}; shift 2 ;;
        --max-size) MAX_SIZE=${2:?}; shift 2 ;;
        --state) STATE=${2:?}; shift 2 ;;
        --accounts) ACCOUNTS=${2:?}; shift 2 ;;
        --all) ALL=1; ARGS+=(--all); shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; ARGS+=("$@"); break ;;
        -*) die "unknown option $1" ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
[ ${#ARGS[@]} = 3 ] || usage
# Checked before any arithmetic: bash evaluates what an expression names (a[$(cmd)] runs cmd).
[[ "$MAX_SIZE" =~ ^([0-9]{1,12})([kKmMgG]?)$ ]] || die "--max-size '$MAX_SIZE': expected digits with an optional k, m or g (25m)"
LIMIT=$(( 10#${BASH_REMATCH[1]} ))
case "${BASH_REMATCH[2]}" in
    [kK]) LIMIT=$(( LIMIT * 1024 )) ;;
    [mM]) LIMIT=$(( LIMIT * 1024 * 1024 )) ;;
    [gG]) LIMIT=$(( LIMIT * 1024 * 1024 * 1024 )) ;;
esac
[ "$LIMIT" -gt 0 ] || die "--max-size '$MAX_SIZE' is no size"
ROOT=${ARGS[0]} WHO=${ARGS[1]} HOST=${ARGS[2]}
ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || die "backup root ${ARGS[0]} is not a directory"
[ -r "$LOGINS" ] || die "--logins FILE is required and must be readable"
[ -r "$SRC_PW" ] || die "--source-passwords FILE (serve-config's output) is required and must be readable"
# The state holds both passwords: never inside the backup root (served, checked, sealed).
STATE_REAL=$(realpath -m -- "$STATE") || die "--state '$STATE' is no path"
case "$STATE_REAL/" in
    "$(cd "$ROOT" && pwd -P)"/*) die "--state $STATE lies inside the backup root $ROOT; give one outside it" ;;
esac
command -v mbsync >/dev/null || die "mbsync missing: apt install isync"
case "$TLS" in
    imaps) SSLTYPE=IMAPS; PORT=${PORT:-993} ;;
    starttls) SSLTYPE=STARTTLS; PORT=${PORT:-143} ;;
    none) SSLTYPE=None; PORT=${PORT:-143} ;;
    *) die "--tls must be imaps, starttls or none" ;;
esac
[ "$WHO" = --all ] && ALL=1
# Passwords: say so when others may read them (the run goes on; the admin decides).
for f in "$LOGINS" "$SRC_PW"; do
    [ $(( 0$(stat -L -c %a "$f") & 4 )) = 0 ] ||
        echo "to-imap: warning: $f is readable by others and holds passwords: chmod 600 it" >&2
done

# A field of a tab-separated line of FILE whose first field is USER.
field() { awk -F'\t' -v u="$2" -v n="$3" '$1 == u && !/^#/ { print $n; exit }' "$1"; }

if [ "$ALL" = 1 ]; then
    if [ -n "$ACCOUNTS" ]; then
        mapfile -t USERS < <(sed -e 's/#.*//' -e 's/[[:space:]]*:.*//' -e 's/[[:space:]]//g' "$ACCOUNTS" | grep -v '^$')
    else
        # Every user the backup has: one without a login in --logins is FAILED, not left out.
        # A user is a directory with a Maildir (new/, cur/, tmp/) at its top or in .Sent or
        # .Chats; lost+found, .mailkeep and the like are none.
        mapfile -t USERS < <(find "$ROOT" -mindepth 1 -maxdepth 1 -type d ! -name '.*' ! -name lost+found -printf '%f\n' |
            sort | while IFS= read -r u; do
                for m in "$ROOT/$u" "$ROOT/$u/.Sent" "$ROOT/$u/.Chats"; do
                    if [ -d "$m/new" ] && [ -d "$m/cur" ] && [ -d "$m/tmp" ]; then printf '%s\n' "$u"; break; fi
                done
            done)
    fi
else
    USERS=("$WHO")
fi
[ ${#USERS[@]} -gt 0 ] || die "no users to copy"

# A string as an mbsync config value: quoted, with \ and " escaped.
q() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

# The size an IMAP server counts for FILE (RFC822.SIZE: CRLF line ends).
imap_size() { local bytes lines; bytes=$(stat -c %s "$1"); lines=$(wc -l < "$1"); echo $(( bytes + lines )); }

# The folders of a user: "channel<TAB>source box<TAB>maildir dir<TAB>target box".
folders() {
    printf 'inbox\tINBOX\t%s\tINBOX\n' "$ROOT/$1"
    printf 'sent\tSent\t%s\t%s\n' "$ROOT/$1/.Sent" "$SENT"
    printf 'chats\tChats\t%s\t%s\n' "$ROOT/$1/.Chats" "$CHATS"
}

# Writes STATE/USER/mbsyncrc (mode 0600: it holds both passwords).
write_config() {
    local user=$1 dir=$2 src_pw=$3 login=$4 pw=$5 channel box path target
    umask 077
    {
        printf 'IMAPAccount source\nHost %s\nPort %s\nUser %s\nPass %s\nSSLType None\nAuthMechs LOGIN\n\n' \
            "$SRC_HOST" "$SRC_PORT" "$(q "$user")" "$(q "$src_pw")"
        printf 'IMAPStore source\nAccount source\n\n'
        printf 'IMAPAccount target\nHost %s\nPort %s\nUser %s\nPass %s\nSSLType %s\n\n' \
            "$HOST" "$PORT" "$(q "$login")" "$(q "$pw")" "$SSLTYPE"
        # MaxSize: a message over the limit becomes a small placeholder on the target.
        printf 'IMAPStore target\nAccount target\nMaxSize %s\n\n' "$LIMIT"
        while IFS=$'\t' read -r channel box path target; do
            [ -d "$path" ] || continue
            printf 'Channel %s\nFar :source:%s\nNear :target:%s\n' "$channel" "$(q "$box")" "$(q "$target")"
            # One way, nothing removed or expunged anywhere; dates kept.
            printf 'Sync Pull New\nCreate Near\nRemove None\nExpunge None\nCopyArrivalDate yes\n'
            printf 'SyncState %s\n\n' "$(q "$dir/$channel.")"
        done < <(folders "$user")
    } > "$dir/mbsyncrc"
}

# Messages mbsync's state records as copied for CHANNEL ("far near flags" lines, both UIDs
# set, no '>' placeholder flag), and placeholders.
copied() {
    find "$1" -type f -path "$1/$2.*" ! -name '*.journal' ! -name '*.new' ! -name '*.lock' -print0 |
        xargs -0 -r awk 'body && $1 > 0 && $2 > 0 { if ($3 ~ />/) p++; else c++ } /^$/ { body = 1 }
                         END { printf "%d %d\n", c, p }'
}

failed_users=0
for user in "${USERS[@]}"; do
    case "$user" in ''|.*|*/*) echo "$user: FAILED: not a user name"; failed_users=$((failed_users + 1)); continue ;; esac
    login=$(field "$LOGINS" "$user" 2) pw=$(field "$LOGINS" "$user" 3) src_pw=$(field "$SRC_PW" "$user" 2)
    if [ -z "$login" ] || [ -z "$pw" ] || [ -z "$src_pw" ]; then
        echo "$user: FAILED: no target login in $LOGINS or no source password in $SRC_PW"
        failed_users=$((failed_users + 1)); continue
    fi
    if [ ! -d "$ROOT/$user" ] || [ -L "$ROOT/$user" ]; then
        echo "$user: FAILED: no backup at $ROOT/$user"; failed_users=$((failed_users + 1)); continue
    fi
    dir=$STATE/$user
    mkdir -p "$dir" && chmod 700 "$STATE" "$dir" || { echo "$user: FAILED: cannot make $dir"; failed_users=$((failed_users + 1)); continue; }
    write_config "$user" "$dir" "$src_pw" "$login" "$pw"
    # The messages the provider will refuse, listed from the backup itself: a file bigger
    # than half the limit may be over it with CRLF line ends, so it is measured.
    : > "$dir/too-large.txt"
    while IFS=$'\t' read -r channel box path target; do
        [ -d "$path" ] || continue
        find "$path/new" "$path/cur" -maxdepth 1 -type f -size +$(( LIMIT / 2 ))c 2>/dev/null | sort |
            while read -r f; do
                s=$(imap_size "$f")
                [ "$s" -gt "$LIMIT" ] && printf '%s\t%s\t%s\n' "$box" "$s" "$f"
            done >> "$dir/too-large.txt"
    done < <(folders "$user")
    channels=$(awk '/^Channel /{ printf "%s ", $2 }' "$dir/mbsyncrc")
    # shellcheck disable=SC2086 # one word per channel
    mbsync -c "$dir/mbsyncrc" $channels > "$dir/mbsync.log" 2>&1
    rc=$?
    refused=$(grep -c 'refuses to store' "$dir/mbsync.log")
    result="" short=0
    while IFS=$'\t' read -r channel box path target; do
        [ -d "$path" ] || continue
        n=$(find "$path/new" "$path/cur" -maxdepth 1 -type f ! -name '.*' 2>/dev/null | wc -l)
        read -r c p < <(copied "$dir" "$channel")
        [ $((c + p)) -lt "$n" ] && short=$((short + n - c - p))
        result+=" $box->$target $c/$n"
    done < <(folders "$user")
    big=$(wc -l < "$dir/too-large.txt")
    if [ "$rc" = 0 ] && [ "$refused" = 0 ] && [ "$short" = 0 ] && [ "$big" = 0 ]; then
        echo "$user: OK:$result"
    else
        why=""
        [ "$big" != 0 ] && why+=" $big too large (placeholders on the target; listed in $dir/too-large.txt)"
        [ "$refused" != 0 ] && why+=" $refused refused by the target"
        [ "$short" != 0 ] && why+=" $short not copied"
        [ "$rc" != 0 ] && why+=" mbsync exit $rc: $(grep -v 'in the clear' "$dir/mbsync.log" | tail -1)"
        echo "$user: FAILED:$result;$why (log: $dir/mbsync.log)"
        failed_users=$((failed_users + 1))
    fi
done
echo "to-imap: ${#USERS[@]} users, $failed_users with messages not copied"
[ "$failed_users" = 0 ]
