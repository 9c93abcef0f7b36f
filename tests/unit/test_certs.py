"""Certificate planning with a fixed clock, and the CLI against a real directory."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509

from customer_friendly.certs.cli import leaf_specs, main
from customer_friendly.certs.pki import KeyPair, Validity, create_ca, issue, plan

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SPECS = leaf_specs("customer-friendly-webhook", "customer-friendly-system", ["localhost"], ["127.0.0.1"])


def actions(result_plan) -> dict[str, str]:
    return {d.name: d.action for d in result_plan.decisions}


def fresh() -> tuple[KeyPair, dict[str, KeyPair]]:
    first = plan(None, {}, SPECS, Validity(), NOW)
    return first.ca, dict(first.leaves)


def test_a_first_run_creates_the_ca_and_both_leaves() -> None:
    result = plan(None, {}, SPECS, Validity(), NOW)
    assert actions(result) == {"ca": "create", "webhook": "create", "controller": "create"}


def test_the_webhook_certificate_names_the_service_and_the_extra_names() -> None:
    ca, leaves = fresh()
    san = leaves["webhook"].cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "customer-friendly-webhook.customer-friendly-system.svc" in san.get_values_for_type(x509.DNSName)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    leaves["webhook"].cert.verify_directly_issued_by(ca.cert)


def test_the_controller_certificate_is_for_client_auth_only() -> None:
    _, leaves = fresh()
    usage = leaves["controller"].cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u.dotted_string for u in usage] == ["1.3.6.1.5.5.7.3.2"]


def test_a_second_run_keeps_valid_certificates() -> None:
    ca, leaves = fresh()
    result = plan(ca, leaves, SPECS, Validity(), NOW + dt.timedelta(days=100))
    assert actions(result) == {"ca": "keep", "webhook": "keep", "controller": "keep"}
    assert not result.changed


@pytest.mark.parametrize(("days_later", "expected"), [(200, "keep"), (250, "renew"), (400, "renew")])
def test_leaves_are_renewed_in_the_last_third_of_their_life(days_later: int, expected: str) -> None:
    ca, leaves = fresh()
    result = plan(ca, leaves, SPECS, Validity(), NOW + dt.timedelta(days=days_later))
    assert actions(result)["webhook"] == expected


def test_an_explicit_renewal_window_wins() -> None:
    ca, leaves = fresh()
    result = plan(ca, leaves, SPECS, Validity(renew_before=dt.timedelta(days=400)), NOW)
    assert actions(result) == {"ca": "keep", "webhook": "renew", "controller": "renew"}


def test_a_renewed_ca_reissues_every_leaf() -> None:
    ca, leaves = fresh()
    result = plan(ca, leaves, SPECS, Validity(), NOW + dt.timedelta(days=3000))
    assert actions(result) == {"ca": "renew", "webhook": "renew", "controller": "renew"}
    result.leaves["webhook"].cert.verify_directly_issued_by(result.ca.cert)


def test_changed_names_reissue_the_webhook_certificate_only() -> None:
    ca, leaves = fresh()
    specs = leaf_specs("customer-friendly-webhook", "customer-friendly-system", ["localhost"], ["127.0.0.2"])
    assert actions(plan(ca, leaves, specs, Validity(), NOW))["webhook"] == "renew"
    assert actions(plan(ca, leaves, specs, Validity(), NOW))["controller"] == "keep"


def test_a_leaf_from_another_ca_is_reissued() -> None:
    ca, _ = fresh()
    other = create_ca("someone else", 365, NOW)
    foreign = issue(other, SPECS["webhook"], 100, NOW)
    assert actions(plan(ca, {"webhook": foreign}, SPECS, Validity(), NOW))["webhook"] == "renew"


def test_a_leaf_never_outlives_its_ca() -> None:
    ca = create_ca("short", 10, NOW)
    leaf = issue(ca, SPECS["webhook"], 365, NOW)
    assert leaf.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


@pytest.mark.parametrize(("ca_days", "leaf_days"), [(0, 1), (10, 20)])
def test_impossible_validities_are_refused(ca_days: int, leaf_days: int) -> None:
    with pytest.raises(ValueError):
        Validity(ca_days=ca_days, leaf_days=leaf_days)


def test_the_cli_writes_files_keeps_them_and_protects_the_keys(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ensure", "--out", str(tmp_path), "--ip", "127.0.0.1", "--print-ca-bundle"]) == 0
    bundle = capsys.readouterr().out.strip()
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(written) == {f"{n}.{e}" for n in ("ca", "webhook", "controller") for e in ("crt", "key")}
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert main(["ensure", "--out", str(tmp_path), "--ip", "127.0.0.1"]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == written
    assert main(["ca-bundle", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == bundle


def test_the_cli_replaces_an_unreadable_certificate(tmp_path: Path) -> None:
    assert main(["ensure", "--out", str(tmp_path)]) == 0
    (tmp_path / "webhook.crt").write_text("garbage")
    assert main(["ensure", "--out", str(tmp_path)]) == 0
    x509.load_pem_x509_certificate((tmp_path / "webhook.crt").read_bytes())


def test_ca_bundle_without_a_ca_is_an_error(tmp_path: Path) -> None:
    assert main(["ca-bundle", "--out", str(tmp_path)]) == 1
