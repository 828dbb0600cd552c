#!/usr/bin/env bash
# Install Debian packages the project needs when they are missing (as root, or through sudo).
set -euo pipefail
[ "$#" -gt 0 ] || exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
echo "installing system packages: $*" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"
