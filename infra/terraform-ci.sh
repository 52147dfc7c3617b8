#!/usr/bin/env bash
# Static checks of the Terraform code, the strongest this machine allows:
#   1. terraform fmt -check   (terraform 1.5.7, the last MPL release, built with `go install`)
#   2. terraform validate     (only where the hashicorp/aws provider is available offline:
#                              a filesystem mirror in $CACHE/terraform-providers; else skipped
#                              WITH the reason printed; the registry is unreachable here)
#   3. checkov                (policy scan, from PyPI into its own venv: it pins boto3 and
#                              friends to versions that conflict with streamrec's)
# Tools are installed into the git-ignored cache on first use and reused afterwards.
#
# Usage: infra/terraform-ci.sh [DIR]   (DIR defaults to terraform/; exit 1 if a check fails)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(cd "${1:-$ROOT/terraform}" && pwd)"
CACHE="${STREAMREC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/streamrec}"
PYTHON="${PYTHON:-python3}"
TERRAFORM_VERSION="1.5.7"
CHECKOV_VERSION="3.3.30"
TERRAFORM="$CACHE/bin/terraform"
CHECKOV_VENV="$CACHE/checkov-venv"
MIRROR="$CACHE/terraform-providers"
# The CLI config of whoever runs this must not change the result (plugin caches, mirrors).
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1

say() { printf '%s\n' "terraform-ci: $*"; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

find_go() {
  command -v go 2>/dev/null && return
  [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go && return
  return 1
}

ensure_terraform() {
  if [ -x "$TERRAFORM" ] && "$TERRAFORM" version 2>/dev/null | head -1 | grep -qx "Terraform v$TERRAFORM_VERSION"; then
    return
  fi
  local go
  go="$(find_go)" || { say "needs Go 1.21+ to build terraform (https://go.dev/dl/)"; exit 2; }
  say "building terraform v$TERRAFORM_VERSION with go install (one-time, ~3 min cold on 2 cores)..."
  local began
  began=$(date +%s)
  GOBIN="$CACHE/bin" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-modcacherw \
    CGO_ENABLED=0 "$go" install "github.com/hashicorp/terraform@v$TERRAFORM_VERSION"
  say "terraform built in $(elapsed "$began")"
}

ensure_checkov() {
  local stamp="$CHECKOV_VENV/.checkov-$CHECKOV_VERSION"
  [ -f "$stamp" ] && return
  say "installing checkov $CHECKOV_VERSION into ${CHECKOV_VENV#"$ROOT"/} (one-time)..."
  local began
  began=$(date +%s)
  rm -rf "$CHECKOV_VENV"
  "$PYTHON" -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  touch "$stamp"
  say "checkov installed in $(elapsed "$began")"
}

mkdir -p "$CACHE/bin"
ensure_terraform
ensure_checkov
failed=0

# 1. formatting -------------------------------------------------------------------------------
if "$TERRAFORM" fmt -check -recursive -diff "$DIR"; then
  say "fmt: ok"
else
  say "fmt: FAILED (run: $TERRAFORM fmt -recursive ${DIR#"$ROOT"/})"
  failed=1
fi

# 2. validate: every directory that calls modules or declares providers is initialised alone --
if compgen -G "$MIRROR/registry.terraform.io/hashicorp/aws/*" >/dev/null; then
  config="$(mktemp)"
  printf 'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' "$MIRROR" >"$config"
  while IFS= read -r root; do
    work="$(mktemp -d)"
    cp -r "$DIR/." "$work/"
    rel="${root#"$DIR"/}"
    if (cd "$work/$rel" && TF_CLI_CONFIG_FILE="$config" "$TERRAFORM" init -backend=false -input=false >/dev/null &&
      TF_CLI_CONFIG_FILE="$config" "$TERRAFORM" validate -no-color); then
      say "validate $rel: ok"
    else
      say "validate $rel: FAILED"
      failed=1
    fi
    rm -rf "$work"
  done < <(find "$DIR" -name versions.tf -not -path '*/.terraform/*' -exec dirname {} \; | sort)
  rm -f "$config"
else
  say "validate: SKIPPED: the hashicorp/aws provider is not available offline. This machine" \
    "cannot reach registry.terraform.io, and building terraform-provider-aws from the Go" \
    "module proxy is far too heavy for CI here (see README, 'Terraform checks'). Put a" \
    "provider mirror in ${MIRROR#"$ROOT"/} (terraform providers mirror) to enable it;" \
    "fmt and checkov still run."
fi

# 3. policy scan --------------------------------------------------------------------------------
# --skip-download: no calls to the Prisma Cloud API (no network, no token). Skips are inline
# `#checkov:skip=ID:reason` comments next to the resource, so each carries its justification.
report="$(mktemp -d)"
if "$CHECKOV_VENV/bin/checkov" -d "$DIR" --framework terraform --quiet --compact \
  --skip-download --download-external-modules false \
  -o cli -o json --output-file-path "console,$report/results.json"; then
  verdict=ok
else
  verdict=FAILED
  failed=1
fi
counts="$("$PYTHON" -c 'import json, sys
s = json.load(open(sys.argv[1]))
s = (s[0] if isinstance(s, list) else s)["summary"]
print("%(passed)d passed, %(failed)d failed, %(skipped)d skipped (justified inline)" % s)' \
  "$report/results.json" 2>/dev/null || echo "no summary")"
say "checkov: $verdict: $counts"
rm -rf "$report"

if [ "$failed" -ne 0 ]; then
  say "FAILED"
  exit 1
fi
say "all checks passed"
