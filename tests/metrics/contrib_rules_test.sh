#!/usr/bin/env bash
# The alert rules of contrib/prometheus: `promtool check rules` on alerts.yml,
# `promtool test rules` on its unit tests (alerts_test.yml: each alert fires
# where it should and stays quiet where it should not), and the metric names
# and labels the rules use (contrib_check.py rules).
# Usage: contrib_rules_test.sh PYTHON CONTRIB_CHECK_PY ALERTS ALERTS_TEST METRICS_CPP
set -u
py=$1 contrib_check=$2 alerts=$3 alerts_test=$4 metrics_cpp=$5
command -v promtool >/dev/null \
  || { echo "SKIP: promtool is not installed (Debian package prometheus)"; exit 77; }
fails=0
promtool check rules "$alerts" || { echo "FAIL: promtool check rules $alerts"; fails=$((fails + 1)); }
promtool test rules "$alerts_test" || { echo "FAIL: promtool test rules $alerts_test"; fails=$((fails + 1)); }
"$py" "$contrib_check" rules "$alerts" "$metrics_cpp"; rc=$?
[ "$rc" -eq 77 ] && exit 77
[ "$rc" -eq 0 ] || fails=$((fails + 1))
echo "3 checks, $fails failed"
[ "$fails" -eq 0 ]
