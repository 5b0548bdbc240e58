#!/usr/bin/env bash
# Offline schema validation of the suite's manifests (no cluster needed); `make test` runs it.
#
#   scripts/validate-manifests.sh            the repo: every overlay in manifests/overlays/,
#                                            manifests/base, manifests/istio, gateway/
#   scripts/validate-manifests.sh DIR|FILE…  those instead (a directory with a kustomization is
#                                            rendered, any other directory is read recursively)
#
# Validators (what each one catches is said beside it below):
#   kustomize            `kubectl kustomize` renders each kustomization (skipped without kubectl)
#   kubernetes-validate  --strict over built-in kinds: types and unknown fields
#   @kubernetes-models   pinned npm models over every other kind: Istio and Gateway API types,
#                        enums, ranges, required fields; an unknown kind fails
#   cloudcoil            Istio kinds with unknown fields forbidden
# Cross-object rules (subsets, backendRefs, weights, ...) are the Rust tests in crates/manifests.
#
# Prints one PASS/FAIL line per validator, then `validate-manifests: N passed, M failed`;
# exits non-zero on any failure. Needs `make tools` (the .venv); runs `npm ci` in tools/validate
# when node_modules is missing. Env: VENV (default .venv), KUBERNETES_VERSION (default 1.33.0).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/tools/validate"
venv="${VENV:-$root/.venv}"
[[ "$venv" = /* ]] || venv="$root/$venv"
k8s_version="${KUBERNETES_VERSION:-1.33.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() {
	echo "FAIL $1"
	failed=$((failed + 1))
	# The validator's own complaints, without the objects that passed.
	[ -n "${2:-}" ] && grep -v -E '^(ok |INFO )' "$2" | sed 's/^/     /' | head -60
}

if [ $# -eq 0 ]; then
	targets=()
	for k in "$root"/manifests/overlays/*/kustomization.yaml; do
		[ -e "$k" ] && targets+=("$(dirname "$k")")
	done
	targets+=("$root/manifests/base" "$root/manifests/istio" "$root/gateway")
else
	targets=("$@")
fi

kubectl_bin="$(command -v kubectl || true)"
inputs=()
render_errors="$work/kustomize.log"
: >"$render_errors"
rendered=0
missing=0
for t in "${targets[@]}"; do
	name="$(echo "${t#"$root"/}" | tr '/' '_')"
	if [ -f "$t" ]; then
		inputs+=("$t")
	elif [ ! -d "$t" ]; then
		echo "$t: not found" >>"$render_errors"
		missing=1
	elif [ -n "$kubectl_bin" ] && { [ -f "$t/kustomization.yaml" ] || [ -f "$t/kustomization.yml" ]; }; then
		if "$kubectl_bin" kustomize "$t" >"$work/render_$name.yaml" 2>>"$render_errors"; then
			inputs+=("$work/render_$name.yaml")
			rendered=$((rendered + 1))
		else
			echo "  ^ kubectl kustomize ${t#"$root"/}" >>"$render_errors"
			missing=1
		fi
	else
		while IFS= read -r -d '' f; do inputs+=("$f"); done < <(
			find "$t" -type f \( -name '*.yaml' -o -name '*.yml' \) ! -name 'kustomization.y*ml' -print0 | sort -z
		)
	fi
done
if [ "$missing" -ne 0 ]; then
	fail "kustomize: rendering or reading the inputs failed" "$render_errors"
elif [ -z "$kubectl_bin" ]; then
	echo "SKIP kustomize: kubectl not found; reading the files without rendering"
elif [ "$rendered" -eq 0 ]; then
	pass "kustomize: no kustomization among the inputs; files read directly"
else
	pass "kustomize: rendered $rendered kustomization(s)"
fi

if [ ${#inputs[@]} -eq 0 ]; then
	fail "no manifests to validate"
	echo "validate-manifests: $passed passed, $failed failed"
	exit 1
fi

if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
	fail "python tools missing in $venv: run \`make tools\`"
	echo "validate-manifests: $passed passed, $failed failed"
	exit 1
fi
if ! counts="$("$venv/bin/python" "$tools/split_kinds.py" "$work/split" "${inputs[@]}" 2>"$work/split.log")"; then
	fail "splitting the manifests by kind: not valid YAML?" "$work/split.log"
	echo "validate-manifests: $passed passed, $failed failed"
	exit 1
fi
count() { echo "$counts" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# kubernetes-validate: built-in kinds only (it passes CRDs unchecked with a warning).
log="$work/kv.log"
if [ "$(count core)" -eq 0 ]; then
	pass "kubernetes-validate --strict: no built-in kinds"
elif "$venv/bin/kubernetes-validate" --strict --no-warn --quiet -k "$k8s_version" "$work/split/core.yaml" >"$log" 2>&1; then
	pass "kubernetes-validate --strict (Kubernetes $k8s_version): $(count core) built-in objects"
else
	fail "kubernetes-validate --strict (Kubernetes $k8s_version)" "$log"
fi

# @kubernetes-models: every other kind. `npm ci` installs exactly the lockfile: a plain install on
# Node 20 silently picks old releases without networking.istio.io/v1.
log="$work/node.log"
# flock: parallel test runs must not run `npm ci` into the same directory at once.
install_node_modules() {
	[ -d node_modules/@kubernetes-models/istio ] || npm ci --no-audit --no-fund --loglevel=error
}
if ! (cd "$tools" && export -f install_node_modules && flock package.json bash -c install_node_modules) >"$log" 2>&1; then
	fail "@kubernetes-models: npm ci in tools/validate failed" "$log"
elif [ "$(count crd)" -eq 0 ]; then
	pass "@kubernetes-models: no Istio or Gateway API kinds"
elif node "$tools/validate-k8s.mjs" "$work/split/crd.yaml" >"$log" 2>&1; then
	pass "@kubernetes-models (Istio + Gateway API): $(tail -n1 "$log")"
else
	fail "@kubernetes-models (Istio + Gateway API): $(tail -n1 "$log")" "$log"
fi

# cloudcoil: Istio kinds with unknown fields forbidden.
log="$work/cloudcoil.log"
if [ "$(count istio)" -eq 0 ]; then
	pass "cloudcoil extra=forbid: no Istio kinds"
elif "$venv/bin/python" "$tools/istio_strict.py" "$work/split/istio.yaml" >"$log" 2>&1; then
	pass "cloudcoil extra=forbid (Istio): $(tail -n1 "$log")"
else
	fail "cloudcoil extra=forbid (Istio): $(tail -n1 "$log")" "$log"
fi

echo "validate-manifests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
