#!/bin/sh
# Builds the Debian root the package tests treat as a host (tests/support/hostroot.rs): a
# debootstrap minbase of this machine's Debian release with what Ansible's apt, deb822_repository
# and systemd_service modules need on a target, and no package source of its own, so apt inside
# it sees only the repositories a test gives it. Written as a tar to $1 (atomically).
#
#   tests/hostroot/build.sh OUT.tar
set -eu
out=$1
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
work=$(mktemp -d "${TMPDIR:-/tmp}/hostroot.XXXXXX")
trap 'rm -rf "$work"' EXIT
# debootstrap's own default mirror: no host is named here.
debootstrap --variant=minbase --include=python3,python3-apt,python3-debian,systemd \
	"$suite" "$work/root" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
root=$work/root
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
	"$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
: >"$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
mkdir -p "$(dirname "$out")"
tar -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
