#!/usr/bin/env bash
# calico_nettest probe: runs on one node, probes every target, reports without `kubectl exec`.
#
# Contract (docs/probe-contract.md): targets come from $PROBE_TARGETS (default
# /etc/calico-nettest/targets), one per line, tab- or space-separated:
#     id  protocol  host  port  expect  payload_bytes
# protocol: tcp | http | udp | dns; `-` marks an empty field; `expect` is a shell glob the
# answer (HTTP body, TCP/UDP reply, or resolved address) must match, `-` for any answer.
# Output: one JSON object per probe on stdout (the pod log), in target order, and a compact
# summary (at most 4 KiB) in $PROBE_SUMMARY (default /dev/termination-log).
# Verdicts: ok, timeout, refused, dns, wrong_backend, other.
# Exit status: 0 when the probes ran, whatever they found; non-zero only when this script could
# not do its job (no targets file, no tools).
# Only what the agnhost image has is used: bash, curl, nc (OpenBSD), nslookup, agnhost.

set -u
TARGETS="${PROBE_TARGETS:-/etc/calico-nettest/targets}"
SUMMARY="${PROBE_SUMMARY:-/dev/termination-log}"
TIMEOUT="${PROBE_TIMEOUT:-3}"
PARALLEL="${PROBE_PARALLELISM:-8}"
AGNHOST="${PROBE_AGNHOST:-/agnhost}"
NODE="${NODE_NAME:-unknown}"

die() {
  printf '{"probe_error":"%s"}\n' "$(esc "$1")"
  printf '{"v":1,"node":"%s","error":"%s"}' "$(esc "$NODE")" "$(esc "$1")" >"$SUMMARY" 2>/dev/null
  exit 2
}

# JSON string escaping for the few characters that can appear in tool output.
esc() {
  local s="${1//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\t'/ }"
  s="${s//$'\r'/ }"
  s="${s//$'\n'/ }"
  printf '%s' "${s:0:300}"
}

[ -r "$TARGETS" ] || die "targets file $TARGETS is not readable"
for tool in curl nc nslookup; do
  command -v "$tool" >/dev/null 2>&1 || die "required tool $tool is missing from the image"
done
[ -x "$AGNHOST" ] || die "agnhost is not at $AGNHOST"

now_ms() { local t; t=$(date +%s%N 2>/dev/null); [ "${#t}" -gt 10 ] && echo $((t / 1000000)) || echo $(( $(date +%s) * 1000 )); }

payload() { head -c "$1" /dev/zero 2>/dev/null | tr '\0' 'x'; }

# Classifies agnhost's fixed error prefixes.
agn_verdict() {
  case "$1" in
    TIMEOUT*) echo timeout ;;
    REFUSED*) echo refused ;;
    DNS*) echo dns ;;
    *) echo other ;;
  esac
}

matches() { [ "$2" = "-" ] || [[ "$1" == $2 ]]; }

probe_one() {
  local id="$1" proto="$2" host="$3" port="$4" expect="$5" size="$6"
  local verdict="other" answer="" detail="" start end out rc
  [ "$size" = "-" ] && size=0
  start=$(now_ms)
  case "$proto" in
    tcp)
      out=$("$AGNHOST" connect --timeout="${TIMEOUT}s" "$host:$port" 2>&1); rc=$?
      if [ $rc -eq 0 ]; then
        verdict=ok
        if [ "$expect" != "-" ]; then
          answer=$(nc -w "$TIMEOUT" "$host" "$port" </dev/null 2>/dev/null | head -c 256)
          matches "$answer" "$expect" || { verdict=wrong_backend; detail="answered '$answer', expected '$expect'"; }
        fi
      else
        verdict=$(agn_verdict "$out"); detail="$out"
      fi
      ;;
    http)
      local args=(-sS -o - -w '\n%{http_code}' --connect-timeout "$TIMEOUT" -m "$((TIMEOUT * 2))")
      if [ "$size" -gt 0 ]; then
        out=$(payload "$size" | curl "${args[@]}" --data-binary @- "http://$host:$port/" 2>&1); rc=$?
      else
        out=$(curl "${args[@]}" "http://$host:$port/" 2>&1); rc=$?
      fi
      case $rc in
        0)
          local code="${out##*$'\n'}"
          answer="${out%$'\n'*}"
          answer="${answer:0:256}"
          if [ "${code:0:1}" != "2" ]; then
            verdict=other; detail="HTTP $code"
          elif matches "$answer" "$expect"; then
            verdict=ok
          else
            verdict=wrong_backend; detail="answered '$answer', expected '$expect'"
          fi
          ;;
        28) verdict=timeout; detail="$out" ;;
        7)
          # "Failed to connect": refused, unless the kernel said why otherwise.
          case "$out" in
            *"No route"*|*"unreachable"*) verdict=other ;;
            *"timed out"*) verdict=timeout ;;
            *) verdict=refused ;;
          esac
          detail="$out"
          ;;
        6) verdict=dns; detail="$out" ;;
        *) verdict=other; detail="curl exit $rc: $out" ;;
      esac
      ;;
    udp)
      local data="hostname"
      [ "$size" -gt 0 ] && data=$(payload "$size")
      out=$("$AGNHOST" connect --protocol=udp --udp-data="$data" --timeout="${TIMEOUT}s" "$host:$port" 2>&1); rc=$?
      if [ $rc -eq 0 ]; then
        verdict=ok
        if [ "$expect" != "-" ]; then
          answer=$(printf '%s\n' "hostname" | nc -u -w "$TIMEOUT" "$host" "$port" 2>/dev/null | head -c 256)
          answer="${answer%$'\n'}"
          matches "$answer" "$expect" || { verdict=wrong_backend; detail="answered '$answer', expected '$expect'"; }
        fi
      else
        verdict=$(agn_verdict "$out"); detail="$out"
      fi
      ;;
    dns)
      local server=() portopt=()
      [ -n "${PROBE_DNS_SERVER:-}" ] && server=("$PROBE_DNS_SERVER")
      [ -n "${PROBE_DNS_PORT:-}" ] && portopt=("-port=$PROBE_DNS_PORT")
      out=$(nslookup -timeout="$TIMEOUT" -retry=1 "${portopt[@]}" "$host" "${server[@]}" 2>&1); rc=$?
      # The first address after the "Name:" line is the answer (the server's own comes before).
      answer=$(printf '%s\n' "$out" | awk '/^Name:/{n=1; next} n && /^Address/{print $NF; exit}')
      if [ $rc -eq 0 ] && [ -n "$answer" ]; then
        if matches "$answer" "$expect"; then verdict=ok; else verdict=wrong_backend; detail="resolved to $answer, expected '$expect'"; fi
      elif [[ "$out" == *"timed out"* ]] || [[ "$out" == *"no servers could be reached"* ]]; then
        verdict=dns; detail="no DNS answer: $out"
      else
        verdict=dns; detail="$out"
      fi
      ;;
    *)
      verdict=other; detail="unknown protocol $proto"
      ;;
  esac
  end=$(now_ms)
  printf '{"id":"%s","protocol":"%s","host":"%s","port":"%s","verdict":"%s","ms":%d,"answer":"%s","detail":"%s"}\n' \
    "$(esc "$id")" "$(esc "$proto")" "$(esc "$host")" "$(esc "$port")" "$verdict" "$((end - start))" "$(esc "$answer")" "$(esc "$detail")"
}

WORK=$(mktemp -d 2>/dev/null || echo "/tmp/calico-nettest.$$")
mkdir -p "$WORK" || die "cannot create a work directory"
trap 'rm -rf "$WORK"' EXIT

n=0
running=0
while read -r id proto host port expect size _rest; do
  case "$id" in ''|'#'*) continue ;; esac
  n=$((n + 1))
  probe_one "$id" "$proto" "$host" "${port:--}" "${expect:--}" "${size:-0}" >"$WORK/$(printf '%06d' "$n")" &
  running=$((running + 1))
  if [ "$running" -ge "$PARALLEL" ]; then
    wait -n 2>/dev/null || wait
    running=$((running - 1))
  fi
done <"$TARGETS"
wait

total=0 ok=0 failed=""
for f in "$WORK"/*; do
  [ -e "$f" ] || continue
  line=$(cat "$f")
  printf '%s\n' "$line"
  total=$((total + 1))
  verdict=${line#*\"verdict\":\"}; verdict=${verdict%%\"*}
  if [ "$verdict" = ok ]; then
    ok=$((ok + 1))
  else
    id=${line#*\"id\":\"}; id=${id%%\"*}
    failed="$failed${failed:+,}[\"$id\",\"$verdict\"]"
  fi
done

# The summary must fit the kubelet's 4 KiB termination-message limit; the log has everything.
summary=$(printf '{"v":1,"node":"%s","total":%d,"ok":%d,"failed":[%s],"truncated":false}' "$(esc "$NODE")" "$total" "$ok" "$failed")
if [ "${#summary}" -gt 4000 ]; then
  summary=$(printf '{"v":1,"node":"%s","total":%d,"ok":%d,"failed":[],"truncated":true}' "$(esc "$NODE")" "$total" "$ok")
fi
printf '%s' "$summary" >"$SUMMARY" 2>/dev/null || printf '{"probe_error":"cannot write %s"}\n' "$SUMMARY"
exit 0
