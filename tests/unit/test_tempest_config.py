"""The Tempest config template, the exclude list and the results parser (no cloud needed)."""

from __future__ import annotations

import configparser
import re

from stackha.services.base import render_template
from stackha.verify import tempest as tp


def conf(**over) -> configparser.ConfigParser:
    values = dict(lab="t", admin_password="pw", auth_url="http://198.18.100.250:5000/v3", glance=True, nova=True,
                  neutron=True, swift=True, image="img-id", flavors=["f1", "f2"], compute_nodes=3)
    values.update(over)
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(render_template("tempest/tempest.conf.j2", **values))
    return cp


def test_conf_points_at_the_vip_and_names_the_fixtures():
    cp = conf()
    assert cp["identity"]["uri_v3"] == "http://198.18.100.250:5000/v3"
    assert cp["auth"]["use_dynamic_credentials"] == "true"
    assert cp["compute"]["image_ref"] == "img-id" and cp["compute"]["flavor_ref_alt"] == "f2"
    assert cp["service_available"]["cinder"] == "false" and cp["service_available"]["swift"] == "true"
    assert cp["validation"]["run_validation"] == "false"


def test_conf_without_nova_has_no_compute_refs_and_says_so():
    cp = conf(nova=False, image=None, flavors=None, compute_nodes=0)
    assert cp["service_available"]["nova"] == "false"
    assert "image_ref" not in cp["compute"]
    assert cp["compute-feature-enabled"]["cold_migration"] == "false"


def test_every_excluded_test_has_a_reason_and_is_a_regex():
    lines = tp.EXCLUDE.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        re.compile(line)
        assert i > 0 and lines[i - 1].startswith("#"), f"no reason above {line}"


def test_parse_csv_counts_statuses_and_strips_tags():
    text = ("test,status,start_time,stop_time\n"
            "\"tempest.api.a.T.test_x[id-1,smoke]\",success,2026-12-04 10:00:00+00:00,2026-12-04 10:00:02.5+00:00\n"
            "tempest.api.a.T.test_y[id-2],fail,,\n"
            "tempest.api.a.T.test_z,skip,,\n"
            "setUpClass (tempest.api.a.T),fail,,\n"
            # what subunit2csv really writes for a failed test (tempest 33 / python3-subunit)
            "tempest.api.a.T.test_w[id-3],failure,,\n"
            # a class skipped on both workers: two rows with one id, as stestr counts them
            "setUpClass (tempest.api.a.U),skip,,\n"
            "setUpClass (tempest.api.a.U),skip,,\n"
            "tempest.api.a.T.test_v,inprogress,,\n")
    tests = tp.parse_csv(text)
    assert tests["tempest.api.a.T.test_x"] == {"status": "success", "seconds": 2.5}
    r = tp.TempestResult(rc=1, tests=tests)
    assert r.counts() == {"success": 1, "fail": 4, "skip": 3}
    assert "setUpClass (tempest.api.a.T)" in r.failed()
    assert "tempest.api.a.T.test_w" in r.failed()
