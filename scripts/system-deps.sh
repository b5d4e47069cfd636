#!/usr/bin/env bash
# Installs what pg2neo's local stack needs from Debian's packages, only when it is missing:
# PostgreSQL 15 (server, contrib, pgbench), Java 17 and Maven (to fetch Neo4j from Maven Central), and Chromium
# for the web console's browser tests (driven by Playwright with this system browser; nothing downloads its own).
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15 postgresql-client-15)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || [ -x /usr/bin/pgbench ] || need+=(postgresql-client-15)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
[ -x /usr/bin/chromium ] || need+=(chromium)
# A font, or the screenshots of the console show boxes for letters.
[ -n "$(fc-list 2>/dev/null | head -n 1)" ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "pg2neo needs these Debian packages: ${need[*]}; run as root: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
