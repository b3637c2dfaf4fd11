"""Settings: production refuses default secrets; retired signing keys still verify."""

import pytest
from pydantic import SecretStr, ValidationError

from app.config import DEV_KEY_FILE, Settings
from app.main import create_app
from app.models.common import Role
from app.security.tokens import KeyRing, generate_private_key_pem


def test_production_refuses_to_start_without_a_key():
    with pytest.raises(ValidationError, match="PEERLINK_JWT_PRIVATE_KEY"):
        Settings(mode="production")


def test_production_refuses_the_generated_development_key():
    with pytest.raises(ValidationError, match="development key"):
        Settings(mode="production", jwt_private_key_file=DEV_KEY_FILE)


def test_production_refuses_wildcard_cors():
    with pytest.raises(ValidationError):
        Settings(mode="production", jwt_private_key=generate_private_key_pem(),
                 cors_origins=["*"])


def test_rotated_key_still_verifies_old_tokens(settings, factory, tmp_path):
    """Tokens signed by the previous key stay valid while it is listed; JWKS shows both."""
    from cryptography.hazmat.primitives import serialization
    from fastapi.testclient import TestClient

    f = factory.facility()
    user = factory.user(Role.coordinator, [f])
    old_token = factory.token(user)  # signed with the current test key
    old_private = serialization.load_pem_private_key(
        settings.jwt_private_key.get_secret_value().encode(), password=None)
    old_public = tmp_path / "old.pem"
    old_public.write_bytes(old_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    rotated = settings.model_copy(update={"jwt_private_key": SecretStr(generate_private_key_pem()),
                                          "jwt_previous_public_key_files": [old_public]})
    app = create_app(rotated)
    assert len(KeyRing.from_settings(rotated).jwks()["keys"]) == 2
    with TestClient(app) as c:
        assert len(c.get("/.well-known/jwks.json").json()["keys"]) == 2
        r = c.get("/v1/auth/me", headers={"Authorization": f"Bearer {old_token}"})
        assert r.status_code == 200
    unlisted = settings.model_copy(
        update={"jwt_private_key": SecretStr(generate_private_key_pem())})
    with TestClient(create_app(unlisted)) as c:
        r = c.get("/v1/auth/me", headers={"Authorization": f"Bearer {old_token}"})
        assert r.status_code == 401
