#!/usr/bin/env bash
# A canary, live: moves product-service's traffic from v1 to v2 in steps against a running
# `localmesh up`, which pushes each change to the gateway and the sidecars as istiod does.
#
# Each step sets the v1/v2 weights of
#   - HTTPRoute product-grpc in gateway/httproutes.yaml (the gateway: the unary rule's 50051
#     backendRefs and the WatchPrices stream rule's 50052 backendRefs), and
#   - VirtualService product-vs in manifests/istio/product-virtualservice.yaml (the sidecars'
#     east-west calls: the `canary` and `watch-prices` rules),
# writes both files as one change (new files renamed over the old ones, as one `kubectl apply`),
# waits until the admin's /config_dump shows a new configuration version, and prints the routes
# that moved. A refused change stops it, naming localmesh's error.
#
# Needs bash, curl, perl and python3. Run `scripts/canary.sh --help` for the flags.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUTES=gateway/httproutes.yaml
VS=manifests/istio/product-virtualservice.yaml
PUSH_TIMEOUT=10 # seconds a push may take (localmesh gathers changes for 300 ms, then loads)

usage() {
  cat <<EOF
Usage: scripts/canary.sh [OPTIONS]

Shifts product-service traffic from v1 to v2 in steps against a running \`localmesh up\`
(\`make run\`). Each step rewrites the v1/v2 weights of
  HTTPRoute product-grpc      $ROUTES   (the gateway: unary calls and WatchPrices)
  VirtualService product-vs   $VS   (the sidecars: the frontend's calls)
as one change, waits until localmesh has pushed it (its admin's /config_dump shows a new
config version) and prints the routes that moved.

Options:
  --root DIR          the tree \`localmesh up --root\` loaded [default: the repository root]
  --admin HOST:PORT   localmesh's admin port (its --admin-port) [default: 127.0.0.1:15000]
  --gateway HOST:PORT the gateway's TLS listener, for --load (its --gateway-port)
                      [default: 127.0.0.1:8443]
  --pause DURATION    wait between steps: 10s, 1m, 500ms, 0 [default: 10s]
  --steps "A/B ..."   the v1/v2 weights of each step, each pair adding up to 100
                      [default: "80/20 50/50 0/100"]
  --load SECONDS      after each push, run \`localmesh load\` through the gateway for this long
                      and print the split it saw; 0: no load [default: 0]
  --localmesh PATH    the localmesh binary for --load [default: target/release/localmesh,
                      else target/debug/localmesh, else localmesh on PATH]
  -h, --help          print this help

Example: scripts/canary.sh --pause 30s --load 5
Undo:    scripts/canary.sh --steps 80/20 --pause 0     (or git checkout the two files)
EOF
}

# A wrong flag: exit 2, naming the flag and why.
bad_flag() {
  echo "canary.sh: $1" >&2
  echo "Run scripts/canary.sh --help for the flags." >&2
  exit 2
}

fail() {
  echo "canary.sh: $*" >&2
  exit 1
}

root=$here
admin=127.0.0.1:15000
gateway=127.0.0.1:8443
pause=10s
steps="80/20 50/50 0/100"
load=0
localmesh=

while [[ $# -gt 0 ]]; do
  flag=$1
  case $flag in
    -h | --help)
      usage
      exit 0
      ;;
    --root=* | --admin=* | --gateway=* | --pause=* | --steps=* | --load=* | --localmesh=*)
      value=${flag#*=}
      flag=${flag%%=*}
      shift
      ;;
    --root | --admin | --gateway | --pause | --steps | --load | --localmesh)
      [[ $# -ge 2 ]] || bad_flag "$flag needs a value"
      value=$2
      shift 2
      ;;
    *) bad_flag "unknown argument '$flag'" ;;
  esac
  case $flag in
    --root) root=$value ;;
    --admin) admin=$value ;;
    --gateway) gateway=$value ;;
    --pause) pause=$value ;;
    --steps) steps=$value ;;
    --load) load=$value ;;
    --localmesh) localmesh=$value ;;
  esac
done

# --root: the two files must be there.
[[ -d $root ]] || bad_flag "--root '$root': not a directory"
root=$(cd "$root" && pwd)
for f in "$ROUTES" "$VS"; do
  [[ -f $root/$f ]] || bad_flag "--root '$root': $root/$f not found (--root is the tree \`localmesh up --root\` loaded)"
done

# --admin, --gateway: HOST:PORT (an http:// in front of --admin is forgiven).
admin=${admin#http://}
admin=${admin%/}
addr_re='^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$'
[[ $admin =~ $addr_re ]] || bad_flag "--admin '$admin': expected HOST:PORT, e.g. 127.0.0.1:15000"
[[ $gateway =~ $addr_re ]] || bad_flag "--gateway '$gateway': expected HOST:PORT, e.g. 127.0.0.1:8443"

# --pause: a duration, as seconds for sleep.
if [[ $pause =~ ^([0-9]{1,6})(ms|s|m)?$ ]]; then
  n=$((10#${BASH_REMATCH[1]}))
  case ${BASH_REMATCH[2]} in
    ms) pause_secs=$((n / 1000)).$(printf '%03d' $((n % 1000))) ;;
    m) pause_secs=$((n * 60)) ;;
    *) pause_secs=$n ;;
  esac
else
  bad_flag "--pause '$pause': expected a duration such as 10s, 1m, 500ms or 0"
fi

# --steps: V1/V2 pairs of whole numbers from 0 to 100 that add up to 100 (an Istio
# VirtualService's weights must; the HTTPRoute gets the same ones).
read -r -a step_list <<<"${steps//,/ }"
[[ ${#step_list[@]} -gt 0 ]] || bad_flag "--steps '$steps': no steps; expected e.g. \"80/20 50/50 0/100\""
for s in "${step_list[@]}"; do
  [[ $s =~ ^(-?[0-9]{1,6})/(-?[0-9]{1,6})$ ]] ||
    bad_flag "--steps: '$s' is not V1/V2 (the v1 and v2 weights, e.g. 80/20)"
  a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]}
  for w in "$a" "$b"; do
    if [[ $w == -* ]] || ((10#$w > 100)); then
      bad_flag "--steps: $s: a weight must be a whole number from 0 to 100, not $w"
    fi
  done
  ((10#$a + 10#$b == 100)) ||
    bad_flag "--steps: $s: the weights must add up to 100; these add up to $((10#$a + 10#$b))"
done

# --load: whole seconds; the binary it needs.
[[ $load =~ ^[0-9]{1,5}$ ]] || bad_flag "--load '$load': expected whole seconds (0: no load)"
load=$((10#$load))
if ((load > 0)); then
  if [[ -z $localmesh ]]; then
    for c in "$here/target/release/localmesh" "$here/target/debug/localmesh" "$(command -v localmesh || true)"; do
      if [[ -n $c && -x $c ]]; then
        localmesh=$c
        break
      fi
    done
    [[ -n $localmesh ]] || bad_flag "--load $load: no localmesh binary found (make build, or pass --localmesh PATH)"
  fi
  [[ -x $localmesh ]] || bad_flag "--localmesh '$localmesh': not an executable file"
  [[ -f $root/gateway/certs/ca.crt ]] ||
    bad_flag "--load $load: $root/gateway/certs/ca.crt not found (localmesh up makes it under its --root)"
fi

for tool in curl perl python3; do
  command -v "$tool" >/dev/null || fail "$tool is needed and not installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/canary.XXXXXX")
trap 'rm -rf "$work"' EXIT

# GET /config_dump into the file $1.
config_dump() {
  curl -fsS --max-time 5 -o "$1" "http://$admin/config_dump" 2>"$work/curl.err" ||
    fail "no localmesh admin answers at http://$admin/config_dump ($(tr -d '\n' <"$work/curl.err")):" \
      "start \`localmesh up\` (make run) first, or pass its admin address with --admin"
}

# Sets cfg_version and cfg_error (last_error on one line; empty when none) from a /config_dump
# file.
read_config() {
  local out
  out=$(
    python3 - "$1" <<'PY'
import json, sys
try:
    with open(sys.argv[1]) as f:
        config = json.load(f)["config"]
    error = " ".join(str(config.get("last_error") or "").split())
    print(f"{int(config['version'])}\t{error}")
except (ValueError, KeyError, TypeError) as e:
    sys.exit(f"canary.sh: /config_dump has no config.version ({e}): is localmesh up to date?")
PY
  ) || exit 1
  cfg_version=${out%%$'\t'*}
  cfg_error=${out#*$'\t'}
}

# The routing lines of the /config_dump file $2 that the one in $1 does not have, each under
# the line it belongs to (the gateway listener, the VirtualService).
moved() {
  python3 - "$1" "$2" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    before = set(json.load(f).get("routing", []))
with open(sys.argv[2]) as f:
    after = json.load(f).get("routing", [])
def indent(line):
    return len(line) - len(line.lstrip(" "))
stack, shown = [], None
for line in after:
    while stack and indent(stack[-1]) >= indent(line):
        stack.pop()
    if line not in before:
        if stack and stack[-1] is not shown:
            shown = stack[-1]
            # "gateway/public-api-gateway https Https :443", "VirtualService default/product-vs hosts ..."
            print("    " + " ".join(shown.split()[:4]))
        print("      " + line.strip())
    stack.append(line)
PY
}

# Sets the v1/v2 weights in both files as one change: checks that every line to change is where
# it is expected (else fails naming the file, changing nothing), writes each changed file as a
# hidden temp file beside it (the loader skips dot files) with the original's mode, then renames
# both. Prints the files it changed.
read -r -d '' EDIT <<'PERL' || true
use strict;
use warnings;

my ($v1, $v2, $root, $routes, $vs) = @ARGV;
my $line_end = qr/[ \t]*$/m;

sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or die "canary.sh: cannot read $path: $!\n";
    local $/;
    my $text = <$fh>;
    close $fh;
    return $text;
}

# The YAML documents of a file, each with the "---" line that starts it.
sub documents { return split /^(?=---[ \t]*$)/m, $_[0]; }

sub named {
    my ($doc, $kind, $name) = @_;
    return $doc =~ /^kind:[ \t]*\Q$kind\E$line_end/m
        && $doc =~ /^metadata:[ \t]*\n(?:[ \t]+.*\n)*?[ \t]+name:[ \t]*\Q$name\E$line_end/m;
}

my %new;

# HTTPRoute product-grpc: a v1 backendRef line followed by a v2 one on the same port, once on
# 50051 (the unary rule) and once on 50052 (the WatchPrices rule).
{
    my $path = "$root/$routes";
    my @docs = documents(slurp($path));
    my (%pairs, $found);
    for my $doc (@docs) {
        next unless named($doc, 'HTTPRoute', 'product-grpc');
        $found++;
        $doc =~ s{^([ \t]*-[ \t]*\{name:[ \t]*product-service-v1,[ \t]*port:[ \t]*(\d+),[ \t]*weight:[ \t]*)\d+(\}[ \t]*\n[ \t]*-[ \t]*\{name:[ \t]*product-service-v2,[ \t]*port:[ \t]*\2,[ \t]*weight:[ \t]*)\d+(\}[ \t]*)$}
                 {$pairs{$2}++; "$1$v1$3$v2$4"}gme;
    }
    die "canary.sh: $path: no HTTPRoute product-grpc (kind: HTTPRoute, metadata.name: product-grpc)\n"
        unless $found;
    my @wrong = grep { ($pairs{$_} // 0) != 1 } qw(50051 50052);
    if (@wrong || keys(%pairs) != 2) {
        my $seen = join(', ', map { "port $_: " . ($pairs{$_} // 0) } sort(keys %pairs, grep { !exists $pairs{$_} } qw(50051 50052)));
        die "canary.sh: $path: HTTPRoute product-grpc does not have the weighted backendRefs this"
          . " script changes: one pair per port, 50051 (unary calls) and 50052 (WatchPrices), each"
          . " as two lines\n"
          . "    - {name: product-service-v1, port: PORT, weight: N}\n"
          . "    - {name: product-service-v2, port: PORT, weight: N}\n"
          . "  found such pairs ($seen). Was it edited by hand? Put those lines back"
          . " (git checkout $routes), or change the weights by hand.\n";
    }
    $new{$path} = join('', @docs);
}

# VirtualService product-vs: a v1 destination with its weight line followed by a v2 one with the
# same port, once without a port (the `canary` rule) and once on 50052 (`watch-prices`).
{
    my $path = "$root/$vs";
    my @docs = documents(slurp($path));
    my (%pairs, $found);
    my $host = qr/\{host:[ \t]*product-service\.default\.svc\.cluster\.local,[ \t]*subset:[ \t]*/;
    for my $doc (@docs) {
        next unless named($doc, 'VirtualService', 'product-vs');
        $found++;
        $doc =~ s{^([ \t]*-[ \t]*destination:[ \t]*${host}v1((?:,[ \t]*port:[ \t]*\{number:[ \t]*\d+\})?)\}[ \t]*\n[ \t]*weight:[ \t]*)\d+([ \t]*\n[ \t]*-[ \t]*destination:[ \t]*${host}v2\2\}[ \t]*\n[ \t]*weight:[ \t]*)\d+([ \t]*)$}
                 {my ($head, $port, $mid, $tail) = ($1, $2, $3, $4); $port =~ s/\D//g;
                  $pairs{$port || 'default'}++; "$head$v1$mid$v2$tail"}gme;
    }
    die "canary.sh: $path: no VirtualService product-vs (kind: VirtualService, metadata.name: product-vs)\n"
        unless $found;
    my @wrong = grep { ($pairs{$_} // 0) != 1 } qw(default 50052);
    if (@wrong || keys(%pairs) != 2) {
        my %rule = (default => 'rule canary', 50052 => 'rule watch-prices (port 50052)');
        my $seen = join(', ', map { ($rule{$_} // "port $_") . ': ' . ($pairs{$_} // 0) }
            sort(keys %pairs, grep { !exists $pairs{$_} } qw(default 50052)));
        die "canary.sh: $path: VirtualService product-vs does not have the weighted routes this"
          . " script changes: a v1 and a v2 destination of product-service.default.svc.cluster.local,"
          . " each followed by its weight line, once on the default port (rule canary) and once on"
          . " port {number: 50052} (rule watch-prices):\n"
          . "    - destination: {host: product-service.default.svc.cluster.local, subset: v1}\n"
          . "      weight: N\n"
          . "    - destination: {host: product-service.default.svc.cluster.local, subset: v2}\n"
          . "      weight: N\n"
          . "  found such pairs ($seen). Was it edited by hand? Put those lines back"
          . " (git checkout $vs), or change the weights by hand.\n";
    }
    $new{$path} = join('', @docs);
}

# Everything checked: write the changed files beside the old ones, then rename them over.
my @changed;
for my $path ("$root/$routes", "$root/$vs") {
    next if $new{$path} eq slurp($path);
    (my $tmp = $path) =~ s{([^/]+)$}{.$1.canary.$$};
    my $mode = (stat $path)[2] & 07777;
    open(my $fh, '>', $tmp) or die "canary.sh: cannot write $tmp: $!\n";
    print {$fh} $new{$path};
    close($fh) or die "canary.sh: cannot write $tmp: $!\n";
    chmod $mode, $tmp;
    push @changed, [$tmp, $path];
}
for my $c (@changed) {
    rename($c->[0], $c->[1]) or do {
        unlink map { $_->[0] } @changed;
        die "canary.sh: cannot replace $c->[1]: $!\n";
    };
    print "$c->[1]\n";
}
PERL

config_dump "$work/start.json"
read_config "$work/start.json"
if [[ -n $cfg_error ]]; then
  fail "localmesh on $admin refused the last change to its files and still runs the one before it:" \
    "$cfg_error. Fix that first: a canary step would be refused too."
fi
echo "localmesh on $admin runs config version $cfg_version; steps (v1/v2): ${step_list[*]}"

n=0
for s in "${step_list[@]}"; do
  n=$((n + 1))
  v1=$((10#${s%/*}))
  v2=$((10#${s#*/}))
  if ((n > 1)) && [[ $pause_secs != 0 && $pause_secs != 0.000 ]]; then
    echo "  (next step in $pause)"
    sleep "$pause_secs"
  fi
  echo
  echo "step $n/${#step_list[@]}: v1 $v1 %, v2 $v2 %"
  config_dump "$work/before.json"
  read_config "$work/before.json"
  before=$cfg_version
  error_before=$cfg_error

  changed=$(perl -e "$EDIT" "$v1" "$v2" "$root" "$ROUTES" "$VS") || exit 1
  if [[ -z $changed ]]; then
    echo "  $ROUTES and $VS already say $v1/$v2: nothing to push (config version $before)"
  fi
  while [[ -n $changed ]] && IFS= read -r f; do
    case ${f#"$root"/} in
      "$ROUTES") echo "  wrote $ROUTES (HTTPRoute product-grpc)" ;;
      *) echo "  wrote $VS (VirtualService product-vs)" ;;
    esac
  done <<<"$changed"

  # Wait for the push: a higher version, or a new last_error (refused).
  deadline=$((SECONDS + PUSH_TIMEOUT))
  while [[ -n $changed ]]; do
    sleep 0.2
    config_dump "$work/after.json"
    read_config "$work/after.json"
    now=$cfg_version
    error_now=$cfg_error
    if ((now > before)); then
      # Both files were renamed within a millisecond, so one push normally has both; wait out
      # the debounce once more in case a second one follows, to report what really happened.
      sleep 0.5
      config_dump "$work/after.json"
      read_config "$work/after.json"
      now=$cfg_version
      if ((now == before + 1)); then
        echo "  pushed: config version $before -> $now"
      else
        echo "  pushed: config version $before -> $now ($((now - before)) pushes for one step: localmesh" \
          "loaded the two files apart, or something else changed them too)"
      fi
      moved "$work/before.json" "$work/after.json"
      break
    fi
    if [[ -n $error_now && $error_now != "$error_before" ]]; then
      fail "localmesh refused the change (config version stays $before; the files keep it):" \
        "$error_now"
    fi
    if ((SECONDS >= deadline)); then
      fail "no push within ${PUSH_TIMEOUT}s after writing ${changed//$'\n'/ and } (config version" \
        "still $before${error_now:+; last_error: $error_now}): is the localmesh on $admin" \
        "serving --root $root?"
    fi
  done

  if ((load > 0)); then
    echo "  localmesh load through $gateway for ${load}s:"
    if ! "$localmesh" load --target "$gateway" --cacert "$root/gateway/certs/ca.crt" --rate 50 \
      --duration "${load}s" >"$work/load.out" 2>&1; then
      sed 's/^/    /' "$work/load.out" >&2
      fail "localmesh load through $gateway failed (is --gateway its --gateway-port?)"
    fi
    grep -E '^(requests|errors|versions)' "$work/load.out" | sed 's/^/    /'
  fi
done
echo
echo "done: v1 $v1 %, v2 $v2 %"
