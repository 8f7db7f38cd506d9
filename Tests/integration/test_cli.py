"""`outrider check`, `outrider version`, and `outrider run` refusing a broken config."""

import subprocess

from helpers import REPO, free_port

GOOD = """workers: 1
admin:
  address: 127.0.0.1:15000
listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: 127.0.0.1:8080
"""

UNKNOWN_KEY_LINE_7 = """workers: 1
admin:
  address: 127.0.0.1:15000
listeners:
  - name: inbound
    address: 127.0.0.1:15006
    bogus: true
    upstream: 127.0.0.1:8080
"""

TWO_ERRORS = """workers: 1
admin:
  address: 127.0.0.1:15000
listeners:
  - name: inbound
    address: 127.0.0.1:notaport
    bogus: true
    upstream: 127.0.0.1:8080
"""  # line 6 bad address, line 7 unknown key

FULL = """workers: 2
log_level: warn
admin:
  address: 127.0.0.1:15000
listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: 127.0.0.1:8080
  - name: outbound
    address: 127.0.0.1:15001
    upstream: 127.0.0.1:9090
timeouts: {header_read: 10s, idle: 60s, request: 0s, upstream_connect: 5s, upstream_response: 30s, upstream_idle: 50s, drain: 30s}
limits: {max_request_header_bytes: 61440, max_request_headers: 100, max_uri_length: 8192, max_connections: 10000, upstream_max_idle: 64}
access_log: {path: stdout}
filters: []
"""


def run(bin_, *args, timeout=20):
    return subprocess.run([str(bin_)] + list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_check_good_config_prints_ok(outrider_bin, tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    r = run(outrider_bin, "check", "--config", str(f))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "OK" in r.stdout, (r.stdout, r.stderr)


def test_check_full_config_with_all_sections(outrider_bin, tmp_path):
    f = tmp_path / "full.yaml"
    f.write_text(FULL)
    r = run(outrider_bin, "check", "--config", str(f))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "OK" in r.stdout


def test_check_unknown_key_reports_file_and_line(outrider_bin, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(UNKNOWN_KEY_LINE_7)
    r = run(outrider_bin, "check", "--config", str(f))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert "%s:7:" % f in out, "expected '%s:7:' in output, got:\n%s" % (f, out)
    assert "bogus" in out
    assert "OK" not in r.stdout.split()


def test_check_reports_each_error(outrider_bin, tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text(TWO_ERRORS)
    r = run(outrider_bin, "check", "--config", str(f))
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "%s:6:" % f in out and "%s:7:" % f in out, out


def test_check_missing_file_fails(outrider_bin, tmp_path):
    r = run(outrider_bin, "check", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode != 0
    assert "nope.yaml" in r.stdout + r.stderr


def test_check_shipped_config(outrider_bin):
    shipped = REPO / "outrider.yaml"
    assert shipped.is_file(), "the repository should ship %s" % shipped
    r = run(outrider_bin, "check", "--config", str(shipped))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "OK" in r.stdout


def test_version(outrider_bin):
    r = run(outrider_bin, "version")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.strip(), "version printed nothing"


def test_unknown_subcommand_fails(outrider_bin):
    r = run(outrider_bin, "frobnicate")
    assert r.returncode != 0


def test_run_with_bad_config_exits_nonzero_with_file_line(outrider_bin, tmp_path):
    f = tmp_path / "outrider.yaml"
    f.write_text(UNKNOWN_KEY_LINE_7.replace("15000", str(free_port())).replace("15006", str(free_port())))
    try:
        r = run(outrider_bin, "run", "--config", str(f), timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("`outrider run` with an invalid config kept running")
    assert r.returncode != 0
    assert "%s:7:" % f in r.stderr, r.stderr
