"""The demo data set loads once, and its documented accounts work."""

import asyncio

from app.db import make_async_engine, make_sessionmaker
from app.demo import load_demo


def _load(settings):
    async def go():
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                return await load_demo(session)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_demo_loads_once_and_accounts_work(client, settings):
    assert "demo data loaded" in _load(settings)
    assert _load(settings) == "demo data already loaded"

    def login(role):
        r = client.post("/v1/auth/token", data={"grant_type": "password", "username": role,
                                                 "password": f"{role}-demo-pass"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    coord = login("coordinator")
    people = client.get("/v1/participants", headers=coord, params={"limit": 200}).json()["items"]
    assert people and {p["network"] for p in people} == {"incarcerated"}
    assert client.get("/v1/keep-apart-orders", headers=coord).json()["items"]
    peer = login("peer_supporter")
    mine = client.get("/v1/pairings", headers=peer).json()["items"]
    assert len(mine) == 1 and mine[0]["recipient"]["preferred_name"]
    cert = client.get(f"/v1/participants/{mine[0]['supporter_id']}/certification", headers=peer)
    assert cert.json()["certified"] is True
    # someone is on call at every level of each facility's chain (the demo roster)
    officer = login("officer")
    for facility in client.get("/v1/facilities", headers=officer).json()["items"]:
        board = client.get("/v1/on-call", params={"facility_id": facility["id"]},
                           headers=officer).json()
        assert board["unstaffed"] == [] and all(lv["people"] for lv in board["levels"])
