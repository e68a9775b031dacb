import hashlib

from tests.conftest import random_bytes


async def test_upload_and_download(origin_client):
    data = random_bytes(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    base = f"/namespace/library%2Ffoo/blobs/{digest}"
    r = await origin_client.post(f"{base}/uploads")
    assert r.status_code == 200, r.text
    uid = r.headers["Location"]
    r = await origin_client.patch(f"{base}/uploads/{uid}", content=data, headers={"Content-Range": f"0,{len(data)}"})
    assert r.status_code == 200, r.text
    r = await origin_client.put(f"{base}/uploads/{uid}")
    assert r.status_code == 200, r.text
    r = await origin_client.get(base)
    assert r.content == data
