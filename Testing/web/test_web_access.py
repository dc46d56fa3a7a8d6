"""Who and what the browser app lets in: data-folder confinement (`TopoRegWeb.data_folder`), the host/token policy
(`TopoRegWeb.access`) and its enforcement over real HTTP and websocket requests against `toporeg serve` started here.

The policy under test: loopback by default; a non-loopback host is refused at start-up without an access token; once a
token is configured (--token or $TOPOREG_SERVE_TOKEN) every request needs it (`?token=`, the session cookie the
server sets, or `Authorization: Bearer`), the trame page, its scripts, the websocket upgrade and downloads alike.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from web_testing import MODULE_DIR, child_env, import_web_package, serve_args, start_server, web_stack_missing

import_web_package()  # TopoRegWeb's pure-Python parts, without slicer
from TopoRegWeb.access import (COOKIE_NAME, AccessError, AccessPolicy, check_bind,  # noqa: E402
                               configured_token, is_loopback)
from TopoRegWeb.data_folder import DataFolder, OutsideDataFolder, looks_like_label  # noqa: E402

TOKEN = "correct-horse-battery-staple-42"


# --- data folder ------------------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for path in (root / "a.nii.gz", root / "sub" / "b.nrrd", root / "notes.txt", root / ".hidden.nii",
                 outside / "secret.nii.gz"):
        path.write_bytes(b"x")
    (root / "inside_link.nii.gz").symlink_to(root / "a.nii.gz")
    (root / "escape.nii.gz").symlink_to(outside / "secret.nii.gz")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    return DataFolder(root), tmp_path


def test_listing_shows_only_images_inside_the_folder(folder):
    data, _ = folder
    assert data.list_images() == ["a.nii.gz", "inside_link.nii.gz", "sub/b.nrrd"]


def test_names_inside_the_folder_resolve(folder):
    data, _ = folder
    assert data.resolve("a.nii.gz") == data.root / "a.nii.gz"
    assert data.resolve("sub/b.nrrd") == data.root / "sub" / "b.nrrd"
    assert data.resolve("sub/./b.nrrd") == data.root / "sub" / "b.nrrd"
    assert data.resolve("inside_link.nii.gz") == data.root / "a.nii.gz"      # a link that stays inside is fine


@pytest.mark.parametrize("name", [
    "../outside/secret.nii.gz", "sub/../../outside/secret.nii.gz", "..", "..\\outside\\secret.nii.gz",
    "/etc/passwd", "C:\\Windows\\win.ini", "C:relative.nii", "\\\\server\\share\\x.nii", "~/x.nii.gz",
    "escape.nii.gz", "escape_dir/secret.nii.gz", "missing.nii.gz", "sub", "", "   ", "a.nii.gz\x00.txt"])
def test_everything_else_is_refused(folder, name):
    data, _ = folder
    with pytest.raises(OutsideDataFolder):
        data.resolve(name)


def test_an_absolute_path_is_refused_even_when_it_points_inside(folder):
    data, _ = folder
    with pytest.raises(OutsideDataFolder, match="absolute"):
        data.resolve(str(data.root / "a.nii.gz"))


def test_label_maps_are_recognised_by_name():
    assert [looks_like_label(n) for n in ("colin27_brainmask_2mm.nii.gz", "colin27_aal_2mm.nii.gz",
                                          "mni152_tissue_2mm.nii.gz", "case1_seg.nrrd", "mni152_t1_2mm.nii.gz",
                                          "flair.nii")] == [True, True, True, True, False, False]


# --- host / token policy ----------------------------------------------------------------------------------
def _resolver(table):
    def resolve(host, _port):
        if host not in table:
            raise OSError("unknown host")
        return [(None, None, None, None, (address, 0)) for address in table[host]]
    return resolve


def test_loopback_hosts():
    resolve = _resolver({"localhost": ["127.0.0.1", "::1"], "lan-name": ["192.168.1.5"], "mixed": ["127.0.0.1",
                                                                                               "10.0.0.2"]})
    loopback = ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"]
    other = ["0.0.0.0", "::", "", "192.168.1.5", "10.1.2.3", "lan-name", "mixed", "no-such-host"]
    assert [is_loopback(h, resolve) for h in loopback] == [True] * len(loopback)
    assert [is_loopback(h, resolve) for h in other] == [False] * len(other)


def test_token_comes_from_the_option_then_the_environment():
    env = {"TOPOREG_SERVE_TOKEN": "from-the-environment"}
    assert configured_token("from-the-option", env) == "from-the-option"
    assert configured_token(None, env) == "from-the-environment"
    assert configured_token("  ", {"TOPOREG_SERVE_TOKEN": " "}) is None


def test_bind_policy():
    check_bind("127.0.0.1", None)
    check_bind("127.0.0.1", TOKEN)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(AccessError, match="not a loopback address"):
        check_bind("0.0.0.0", None)
    with pytest.raises(AccessError, match="at least 16 characters"):
        check_bind("0.0.0.0", "short")


def test_request_check():
    policy = AccessPolicy(TOKEN)
    cookie = policy.cookie_value()
    assert TOKEN not in cookie and len(cookie) == 64
    assert policy.check(TOKEN) == "query"
    assert policy.check(cookie=cookie) == "cookie"
    assert policy.check(authorization=f"Bearer {TOKEN}") == "header"
    assert [policy.check(q, c, a) for q, c, a in ((None, None, None), ("wrong", None, None), (None, TOKEN, None),
                                                   (None, "0" * 64, None), (None, None, f"Basic {TOKEN}"))] == \
        [None] * 5
    assert AccessPolicy(None).check() == "open"


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "refusing to serve on '0.0.0.0'"),
    (["--host", "0.0.0.0", "--token", "short"], "at least 16 characters"),
])
def test_unsafe_start_up_is_refused_before_anything_binds(tmp_path, args, message):
    result = subprocess.run(serve_args("--data", str(tmp_path), "--port", "9", *args), capture_output=True,
                            text=True, env=child_env(), timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "TopoReg web: serving" not in result.stdout


def test_serve_without_the_web_extra_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['trame_slicer'] = None; from toporeg.cli.main import main; "
            f"sys.exit(main(['serve', '--data', {str(tmp_path)!r}, '--module-dir', {str(MODULE_DIR)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)
    assert result.returncode == 2 and "pip install 'toporeg[web]'" in result.stderr, result.stderr


def test_policy_and_confinement_need_no_slicer():
    """access and data_folder are pure Python: importing them (and the package) loads neither slicer nor trame."""
    code = (f"import sys; sys.path.insert(0, {str(MODULE_DIR)!r}); import TopoRegWeb.access, TopoRegWeb.data_folder; "
            "print(sorted(m for m in ('slicer', 'trame', 'trame_slicer', 'vtk', 'aiohttp') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# --- enforcement over HTTP and the websocket --------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory):
    missing = web_stack_missing()
    if missing:
        pytest.skip(f"the web server cannot start here: {missing}")
    tmp = tmp_path_factory.mktemp("guarded")
    (tmp / "data").mkdir()
    server = start_server(tmp, "--data", str(tmp / "data"), "--work-dir", str(tmp / "work"),
                          env={"TOPOREG_SERVE_TOKEN": TOKEN})   # configured through the environment
    yield server
    server.stop()


def _get(url: str, headers: dict | None = None):
    """(status, headers, body) of a GET, following redirects like a browser (urllib raises on 4xx)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_http_requests_need_the_token(guarded_server):
    base = guarded_server.url
    for path in ("", "index.html", "index.html?token=wrong", "?token=", "toporeg/download/vtkMRMLScalarVolumeNode1"):
        status, _, body = _get(base + path)
        assert status == 401 and b"access token" in body, (path, status)
    status, headers, body = _get(base + f"?token={TOKEN}")       # / redirects to index.html, token kept
    assert status == 200 and b"<html" in body.lower()
    cookie = headers.get("Set-Cookie", "")
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";")[0].split("=", 1)[1]
    assert session == AccessPolicy(TOKEN).cookie_value() and TOKEN not in cookie
    assert headers.get("Referrer-Policy") == "no-referrer"
    assert _get(base + "index.html", {"Cookie": f"{COOKIE_NAME}={session}"})[0] == 200
    assert _get(base + "index.html", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert _get(base + "index.html", {"Cookie": f"{COOKIE_NAME}={TOKEN}"})[0] == 401   # the cookie is not the token
    # with the token, only results the page lists can be downloaded: no node IDs, no paths
    for path in ("toporeg/download/vtkMRMLScalarVolumeNode1", "toporeg/download/..%2F..%2Fetc%2Fpasswd"):
        assert _get(base + path, {"Authorization": f"Bearer {TOKEN}"})[0] == 404


def test_websocket_needs_the_token(guarded_server):
    import aiohttp

    ws_url = guarded_server.url.replace("http://", "ws://") + "ws"
    session_cookie = AccessPolicy(TOKEN).cookie_value()

    async def attempt(url: str, headers: dict | None = None):
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, headers=headers or {}, timeout=aiohttp.ClientWSTimeout(ws_close=5)):
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    async def all_attempts():
        return [await attempt(ws_url), await attempt(ws_url + "?token=wrong"),
                await attempt(ws_url, {"Cookie": f"{COOKIE_NAME}=not-the-session"}),
                await attempt(ws_url + f"?token={TOKEN}"),
                await attempt(ws_url, {"Cookie": f"{COOKIE_NAME}={session_cookie}"})]

    assert asyncio.run(all_attempts()) == [401, 401, 401, 101, 101]


def test_the_page_works_in_a_browser_with_the_token(guarded_server):
    """The real trame client behind the guard: `?token=` once, then its scripts and websocket pass on the cookie."""
    from web_browser import Page, browser_missing

    missing = browser_missing()
    if missing:
        pytest.skip(f"no browser check: {missing}")
    page = Page(guarded_server.url + f"?token={TOKEN}")
    try:
        assert page.state("data_files") == [] and page.state("job_error") == ""   # the state came over the websocket
        page.driver.delete_all_cookies()
        page.driver.get(guarded_server.url)
        assert "requires its access token" in page.driver.find_element("tag name", "body").text
    finally:
        page.close()


def test_server_start_time_is_reported(guarded_server):
    """Not a limit (the machine is shared), a number for the report: seconds until the ready line."""
    print(f"\n`toporeg serve` ready after {guarded_server.start_seconds:.1f} s")
    assert guarded_server.start_seconds > 0
