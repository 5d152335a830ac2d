"""Cookie and host hygiene of the judging app, and a limit on failed sign-ins."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from fastapi.testclient import TestClient

from llmpo.human.app import COOKIE_MAX_AGE, MAX_SIGNIN_FAILURES, create_app


def sign_in(client: TestClient, token: str):
    form = client.get("/signin")
    nonce = re.search(r'name="nonce" value="([^"]*)"', form.text).group(1)  # type: ignore[union-attr]
    return client.post("/signin", data={"nonce": nonce, "token": token})


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_the_cookie_is_secure_over_tls_and_short_lived(human_project, scheme):
    _, store, tokens = human_project()
    with TestClient(
        create_app(store), base_url=f"{scheme}://testserver", follow_redirects=False
    ) as client:
        response = sign_in(client, tokens["alice"])
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert ("Secure" in cookie) == (scheme == "https")
    assert f"Max-Age={COOKIE_MAX_AGE}" in cookie and COOKIE_MAX_AGE <= 24 * 3600


def test_a_foreign_host_header_is_refused(human_project):
    _, store, tokens = human_project()
    app = create_app(store, allowed_hosts={"127.0.0.1", "localhost"})
    with TestClient(app, base_url="http://localhost:8765", follow_redirects=False) as client:
        client.headers["Authorization"] = f"Bearer {tokens['alice']}"
        assert client.get("/api/status").status_code == 200
        rebound = client.get("/api/status", headers={"host": "evil.example:8765"})
        assert rebound.status_code == 400 and "Host" in rebound.text
        assert client.get("/signin", headers={"host": "127.0.0.1"}).status_code == 200


def test_failed_sign_ins_are_rate_limited(human_project):
    _, store, tokens = human_project()
    with TestClient(create_app(store), follow_redirects=False) as client:
        codes = [sign_in(client, f"guess-{k}").status_code for k in range(MAX_SIGNIN_FAILURES)]
        assert codes == [401] * MAX_SIGNIN_FAILURES
        limited = sign_in(client, tokens["alice"])  # even the right token waits now
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
