"""The images and the cert-manager overlay, checked as text: no image can be built here."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def console_scripts() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=")[0].strip() for line in lines}


def test_each_image_target_runs_a_console_script_as_a_non_root_user_on_a_pinned_base() -> None:
    text = (ROOT / "images" / "Dockerfile").read_text()
    targets = dict(re.findall(r"^FROM runtime AS (\w+)\n(?:.*\n)*?ENTRYPOINT \[\"([\w-]+)\"\]", text, re.M))
    assert targets == {"webhook": "cfo-webhook", "controller": "cfo-controller", "agent": "cfo-agent"}
    assert set(targets.values()) <= console_scripts()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    assert "USER 65532:65532" in text


def test_the_manifests_name_the_images_the_dockerfile_builds() -> None:
    images = set()
    for path in (ROOT / "manifests" / "base").glob("*.yaml"):
        images |= set(re.findall(r"image: (ghcr\.io/customer-friendly/\w+):", path.read_text()))
    policy = yaml.safe_load((ROOT / "manifests" / "base" / "policy.yaml").read_text())
    images.add(policy["data"]["agentImage"].split(":")[0])
    assert images == {f"ghcr.io/customer-friendly/{t}" for t in ("webhook", "controller", "agent")}
