"""Customer (CRM): tiers, required fields, extra fields kept (CONTRACT.md 2)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from samples import customer, without

from schemas.customers import Customer, CustomerTier


def test_contract_example_is_valid() -> None:
    record = Customer.model_validate(customer())
    assert record.tier is CustomerTier.PLATINUM
    assert record.updated_at is not None


@pytest.mark.parametrize("tier", ["platinum", "gold", "standard"])
def test_tiers(tier: str) -> None:
    assert Customer.model_validate(customer(tier=tier)).tier == tier


@pytest.mark.parametrize("tier", ["silver", "Gold", "", None, 1])
def test_unknown_tier_is_rejected(tier: object) -> None:
    with pytest.raises(ValidationError):
        Customer.model_validate(customer(tier=tier))


@pytest.mark.parametrize("missing", ["customer_id", "name", "tier"])
def test_required_fields(missing: str) -> None:
    with pytest.raises(ValidationError):
        Customer.model_validate(without(customer(), missing))


@pytest.mark.parametrize("optional", ["region", "account_manager", "updated_at"])
def test_optional_fields(optional: str) -> None:
    assert getattr(Customer.model_validate(without(customer(), optional)), optional) is None


def test_extra_fields_are_kept_and_passed_through() -> None:
    raw = json.dumps(customer(credit_limit=25000, contacts=[{"email": "x@example.com"}])).encode()
    record = Customer.model_validate_json(raw)
    assert record.model_extra == {"credit_limit": 25000, "contacts": [{"email": "x@example.com"}]}
    dumped = json.loads(record.model_dump_json())
    assert dumped["credit_limit"] == 25000
    assert dumped["contacts"] == [{"email": "x@example.com"}]


def test_customer_id_is_an_identifier() -> None:
    with pytest.raises(ValidationError):
        Customer.model_validate(customer(customer_id="C 7"))


def test_updated_at_needs_an_offset() -> None:
    with pytest.raises(ValidationError, match="no UTC offset"):
        Customer.model_validate(customer(updated_at="2026-11-01T00:00:00"))


def test_name_is_bounded() -> None:
    with pytest.raises(ValidationError):
        Customer.model_validate(customer(name="x" * 257))
    with pytest.raises(ValidationError):
        Customer.model_validate(customer(name=""))
