"""scripts/bundle_corpus.py: which analyses it runs on a collection laid out like openstack-bundles."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bundle_corpus.py"
BUNDLE = "applications:\n  keystone:\n    charm: ch:keystone\n    num_units: 3\n"


def load():
    spec = importlib.util.spec_from_file_location("bundle_corpus", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_an_overlay_linked_into_several_bundle_directories_is_analysed_with_each_bundle(tmp_path):
    # openstack-bundles links stable/overlays/openstack-base-spaces-overlay.yaml into every
    # openstack-base-* directory, for the bundle beside each link: one analysis per (overlay, base).
    (tmp_path / "stable" / "overlays").mkdir(parents=True)
    (tmp_path / "stable" / "overlays" / "spaces-overlay.yaml").write_text("applications: {}\n")
    for d in ("stable/openstack-base", "development/openstack-base-a", "development/openstack-base-b"):
        (tmp_path / d / "tests" / "bundles").mkdir(parents=True)
        (tmp_path / d / "bundle.yaml").write_text(BUNDLE)
        (tmp_path / d / "tests" / "bundles" / "bundle.yaml").symlink_to("../../bundle.yaml")
        (tmp_path / d / "spaces-overlay.yaml").symlink_to(tmp_path / "stable" / "overlays" / "spaces-overlay.yaml")
    counts: Counter[str] = Counter()
    jobs = load().jobs(tmp_path, ["stable", "development"], counts)
    labels = sorted(label for label, _ in jobs)
    assert labels == sorted([
        "development/openstack-base-a/bundle.yaml",
        "development/openstack-base-a/bundle.yaml --overlay development/openstack-base-a/spaces-overlay.yaml",
        "development/openstack-base-b/bundle.yaml",
        "development/openstack-base-b/bundle.yaml --overlay development/openstack-base-b/spaces-overlay.yaml",
        "stable/openstack-base/bundle.yaml",
        # stable/openstack-base/spaces-overlay.yaml is the same pair as this one: a duplicate
        "stable/openstack-base/bundle.yaml --overlay stable/openstack-base/spaces-overlay.yaml",
    ]), labels
    assert counts["duplicate (symlink)"] == 3 + 1, counts  # three tests/bundles links, one overlay pair
