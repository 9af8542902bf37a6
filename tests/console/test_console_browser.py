"""The operator console driven in headless Chromium: sign in, issue, read the client
configuration, rotate, revoke, audit, health; hostile notes stay text; the page runs
under its Content-Security-Policy without a single violation.

The tests run in order and share one server and one browser (see conftest.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from app.api.console import CSP
from tests.conftest import ADMIN_TOKEN, challenge_value
from tests.console.conftest import LiveService

HOSTILE_NOTE = "<img src=x onerror=alert(1)>"
SERVER_URL = "https://acme-delegate.example.net"  # the live service's PUBLIC_URL
# Where the README's screenshot comes from: ACME_DELEGATE_CONSOLE_SCREENSHOT=docs/console.png
SCREENSHOT = os.environ.get("ACME_DELEGATE_CONSOLE_SCREENSHOT")

# What the tests learn along the way (they run in file order).
seen: dict[str, Any] = {}


def wait(browser: Any, condition: Callable[[Any], Any], timeout: float = 10) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(condition)


def visible(browser: Any, css: str) -> Any:
    return wait(browser, ec.visibility_of_element_located((By.CSS_SELECTOR, css)))


def text_in(browser: Any, css: str, text: str) -> None:
    wait(browser, ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def loaded(browser: Any, table: str) -> None:
    """Wait until the table's latest load finished (it is aria-busy while loading)."""
    wait(browser, lambda b: b.find_element(By.ID, table).get_attribute("aria-busy") == "false")


def go(browser: Any, live: LiveService, route: str) -> None:
    """Open a view and wait until it has loaded what it shows."""
    url = f"{live.url}/console/#/{route}"
    if browser.current_url == url:
        browser.refresh()
    else:
        browser.get(url)
    wait(browser, lambda b: b.execute_script(
        "return document.body.dataset.ready === window.location.hash"))


def sign_in(browser: Any, live: LiveService, token: str = ADMIN_TOKEN) -> None:
    go(browser, live, "signin")
    field = visible(browser, "#signin-token")
    field.clear()
    field.send_keys(token, Keys.ENTER)  # the keyboard alone signs in


def csp_violations(browser: Any) -> list[str]:
    """Console messages about the policy, or any script error, since the last call."""
    return [entry["message"] for entry in browser.get_log("browser")
            if "Content Security Policy" in entry["message"] or (
                entry["level"] == "SEVERE" and "/admin/" not in entry["message"])]


def no_alert(browser: Any) -> bool:
    try:
        _ = browser.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def update(live: LiveService, account: dict[str, str], value: str) -> int:
    return httpx.post(f"{live.url}/update", json={"subdomain": account["subdomain"],
                                                  "txt": value},
                      headers={"X-Api-User": account["username"],
                               "X-Api-Key": account["password"]}, timeout=10).status_code


def test_the_page_carries_its_policy(live_service: LiveService) -> None:
    for path in ("/console/", "/console/assets/app.js", "/console/assets/console.css"):
        answer = httpx.get(live_service.url + path, timeout=10)
        assert answer.status_code == 200
        assert answer.headers["content-security-policy"] == CSP
        assert "default-src 'self'" in answer.headers["content-security-policy"]


def test_sign_in_is_refused_with_a_wrong_token(browser: Any, live_service: LiveService
                                               ) -> None:
    sign_in(browser, live_service, "not-the-admin-token")
    text_in(browser, "#signin-error", "The admin token was refused.")
    assert browser.find_element(By.ID, "nav").is_displayed() is False
    assert browser.execute_script("return sessionStorage.length") == 0
    go(browser, live_service, "accounts")  # no way around the sign-in page
    wait(browser, lambda b: b.current_url.endswith("#/signin"))
    assert not browser.find_element(By.ID, "view-accounts").is_displayed()
    assert csp_violations(browser) == []


def test_issue_shows_the_key_once_with_the_cert_manager_snippet(
        browser: Any, live_service: LiveService) -> None:
    sign_in(browser, live_service)
    visible(browser, "#accounts-table")
    assert browser.execute_script("return document.cookie") == ""
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='#/issue']").click()
    visible(browser, "#i-domain").send_keys("www.example.com")
    browser.find_element(By.ID, "i-note").send_keys(HOSTILE_NOTE)
    browser.find_element(By.ID, "i-allowfrom").send_keys("127.0.0.0/8\n::1/128")
    browser.find_element(By.CSS_SELECTOR, "#issue-form button[type=submit]").click()
    key = visible(browser, "#issue-result-key").text
    username = browser.find_element(By.CSS_SELECTOR, ".issued .facts dd.mono").text
    snippet = browser.find_element(By.CSS_SELECTOR, "[data-client='cert-manager'] pre").text
    secret, issuer = yaml.safe_load_all(snippet)
    assert secret["kind"] == "Secret" and issuer["kind"] == "ClusterIssuer"
    account = json.loads(secret["stringData"]["acmedns.json"])["www.example.com"]
    assert account["password"] == key and account["username"] == username
    assert account["fulldomain"] == "_acme-challenge.www.example.com"
    assert account["allowfrom"] == ["127.0.0.0/8", "::1/128"]
    solver = issuer["spec"]["acme"]["solvers"][0]["dns01"]["acmeDNS"]
    assert solver["host"] == SERVER_URL
    assert solver["accountSecretRef"] == {"name": secret["metadata"]["name"],
                                          "key": "acmedns.json"}
    # Every client's configuration names this account and this service.
    for client in ("lego", "lego-httpreq", "certbot", "acme-sh", "caddy"):
        text = browser.find_element(By.CSS_SELECTOR, f"[data-client='{client}'] pre").text
        assert key in text and SERVER_URL in text, client
    # The key is real: the client configuration works against the service.
    assert update(live_service, account, challenge_value(1)) == 200
    assert live_service.do.find_records("_acme-challenge.www.example.com", "TXT")
    seen["account"] = account
    assert no_alert(browser) and csp_violations(browser) == []


def test_a_delegated_credential_comes_with_its_cname(browser: Any, live_service: LiveService
                                                     ) -> None:
    browser.find_element(By.ID, "issue-another").click()  # the form again, the key gone
    assert seen["account"]["password"] not in browser.page_source
    visible(browser, "#i-domain").send_keys("shop.customer.net")
    browser.find_element(By.CSS_SELECTOR, "label[for='i-delegated']").click()
    browser.find_element(By.ID, "i-values").send_keys("4")
    browser.find_element(By.CSS_SELECTOR, "#issue-form button[type=submit]").click()
    cname = visible(browser, "[data-client='cname'] pre").text
    target = cname.split(" CNAME ")[1].rstrip(".")
    assert cname == f"_acme-challenge.shop.customer.net. CNAME {target}."
    assert target.endswith(".acme.example.org")
    # The service URL field rewrites every snippet; a URL that is not one is refused.
    server = browser.find_element(By.ID, "issue-result-server")
    server.clear()
    server.send_keys("http://127.0.0.1:8080")
    text_in(browser, "[data-client='acme-sh'] pre", "ACMEDNS_BASE_URL=http://127.0.0.1:8080")
    server.send_keys(" $(reboot)")
    text_in(browser, "#issue-result .error", "Give an http:// or https:// URL.")
    assert "reboot" not in browser.find_element(By.CSS_SELECTOR, "#issue-result").text.replace(
        "Give", "").split("URL.")[-1]


def test_the_key_is_not_shown_again_after_a_reload(browser: Any, live_service: LiveService
                                                   ) -> None:
    key = seen["account"]["password"]
    go(browser, live_service, "issue")
    browser.refresh()
    visible(browser, "#i-domain")
    assert key not in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "#issue-result *") == []
    go(browser, live_service, f"account/{seen['account']['username']}")
    text_in(browser, "#account-facts", seen["account"]["username"])
    assert key not in browser.page_source
    storage = browser.execute_script(
        "return JSON.stringify(Object.assign({}, sessionStorage, localStorage))")
    assert key not in storage and json.loads(storage) == {
        "acme-delegate.admin-token": ADMIN_TOKEN}


def test_a_hostile_note_is_shown_as_text(browser: Any, live_service: LiveService) -> None:
    go(browser, live_service, "accounts")
    text_in(browser, "#accounts-table tbody", "_acme-challenge.www.example.com")
    notes = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.note")]
    assert HOSTILE_NOTE in notes
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    go(browser, live_service, f"account/{seen['account']['username']}")
    text_in(browser, "#account-facts", HOSTILE_NOTE)
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert browser.find_element(By.ID, "e-note").get_attribute("value") == HOSTILE_NOTE
    assert no_alert(browser) and csp_violations(browser) == []


def test_search_and_filters(browser: Any, live_service: LiveService) -> None:
    go(browser, live_service, "accounts")
    text_in(browser, "#accounts-table tbody", "shop.customer.net")
    search = browser.find_element(By.ID, "f-q")
    search.send_keys("customer", Keys.ENTER)
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#accounts-table td.name"))
         == 1)
    assert "shop.customer.net" in browser.find_element(By.ID, "accounts-table").text
    search.clear()
    browser.find_element(By.CSS_SELECTOR, "#f-mode option[value='direct']").click()
    wait(browser, lambda b: "shop.customer.net" not in b.find_element(
        By.ID, "accounts-table").text)
    browser.find_element(By.ID, "f-expiring").send_keys("30", Keys.ENTER)
    text_in(browser, "#accounts-table tbody", "No account matches.")
    browser.find_element(By.CSS_SELECTOR, "#accounts-filter button[type=reset]").click()
    text_in(browser, "#accounts-table tbody", "shop.customer.net")


def test_edit_allowfrom_note_and_expiry(browser: Any, live_service: LiveService) -> None:
    go(browser, live_service, f"account/{seen['account']['username']}")
    text_in(browser, "#account-facts", seen["account"]["username"])
    note = browser.find_element(By.ID, "e-note")
    note.clear()
    note.send_keys("moved to the new cluster")
    allow = browser.find_element(By.ID, "e-allowfrom")
    allow.clear()
    allow.send_keys("127.0.0.0/8")
    browser.execute_script("document.getElementById('e-expires').value = '2099-01-02T03:04'")
    browser.find_element(By.CSS_SELECTOR, "#account-edit button[type=submit]").click()
    text_in(browser, "#account-result", "Saved.")
    shown = httpx.get(f"{live_service.url}/admin/accounts/{seen['account']['username']}",
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10).json()
    assert shown["note"] == "moved to the new cluster"
    assert shown["allowfrom"] == ["127.0.0.0/8"]
    assert shown["expires_at"].startswith("2099-01-0")
    text_in(browser, "#account-facts", "moved to the new cluster")


def test_rotate_then_revoke(browser: Any, live_service: LiveService) -> None:
    account = seen["account"]
    go(browser, live_service, f"account/{account['username']}")
    text_in(browser, "#account-facts", account["username"])
    # Escape cancels the confirmation; nothing changes.
    browser.find_element(By.ID, "account-rotate").click()
    visible(browser, "#confirm")
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-cancel"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait(browser, lambda b: not b.find_element(By.ID, "confirm").is_displayed())
    assert update(live_service, account, challenge_value(2)) == 200  # old key still works
    # Rotate: a new key, shown once; the old one stops at once.
    browser.find_element(By.ID, "account-rotate").click()
    visible(browser, "#confirm-ok").click()
    new_key = visible(browser, "#account-issued-key").text
    assert new_key and new_key != account["password"]
    text_in(browser, "#account-result", "Rotated")
    assert update(live_service, account, challenge_value(3)) == 401
    rotated = {**account, "password": new_key}
    assert update(live_service, rotated, challenge_value(3)) == 200
    live = live_service.do.find_records("_acme-challenge.www.example.com", "TXT")
    assert len(live) == 2
    # Revoke: confirmed, its records go, and the page says how many.
    browser.find_element(By.ID, "account-revoke").click()
    visible(browser, "#confirm-ok").click()
    text_in(browser, "#account-result", "Revoked.")
    text_in(browser, "#account-result", "TXT values removed from _acme-challenge.www.example"
                                        ".com: 2.")
    assert new_key not in browser.page_source  # revoking forgets the shown key
    assert browser.find_element(By.ID, "account-revoke").get_attribute("disabled") is not None
    assert live_service.do.find_records("_acme-challenge.www.example.com", "TXT") == []
    assert update(live_service, rotated, challenge_value(4)) == 401
    # The list: gone from the active accounts, shown as revoked with "include revoked".
    go(browser, live_service, "accounts")
    text_in(browser, "#accounts-table tbody", "shop.customer.net")
    assert "_acme-challenge.www.example.com" not in browser.find_element(
        By.ID, "accounts-table").text
    browser.find_element(By.CSS_SELECTOR, "label[for='f-revoked']").click()
    text_in(browser, "#accounts-table tbody", "_acme-challenge.www.example.com")
    row = browser.find_element(By.CSS_SELECTOR, "#accounts-table tr.revoked")
    assert "revoked" in row.text and "_acme-challenge.www.example.com" in row.text
    assert csp_violations(browser) == []


def test_revoke_says_when_digitalocean_could_not_remove_a_value(
        browser: Any, live_service: LiveService) -> None:
    account = httpx.post(f"{live_service.url}/admin/accounts", json={"domain": "old.example.com"},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10).json()
    assert update(live_service, account, challenge_value(9)) == 200
    go(browser, live_service, f"account/{account['username']}")
    live_service.do.update_faults(methods=["DELETE"], error_next=4, error_status=500)
    try:
        browser.find_element(By.ID, "account-revoke").click()
        visible(browser, "#confirm-ok").click()
        text_in(browser, "#account-result", "Revoked.")
        text_in(browser, "#account-result", "1 could not be removed from DigitalOcean yet")
    finally:
        live_service.do.update_faults(error_next=0, methods=None)
    assert update(live_service, account, challenge_value(10)) == 401


def test_audit_lists_the_actions_just_taken(browser: Any, live_service: LiveService) -> None:
    username = seen["account"]["username"]
    go(browser, live_service, "audit")
    visible(browser, "#a-account").send_keys(username, Keys.ENTER)
    # create, update, change, update, rotate, the old key refused, update, revoke, refused
    expected = ["auth.failed", "account.revoke", "update", "auth.failed", "account.rotate",
                "update", "account.change", "update", "account.create"]

    def events(b: Any) -> list[str]:
        try:
            return [cell.text for cell in b.find_elements(
                By.CSS_SELECTOR, "#audit-table td[data-label='Event']")]
        except StaleElementReferenceException:  # the table was being redrawn
            return []

    try:
        wait(browser, lambda b: events(b) == expected)
    except TimeoutException:
        assert events(browser) == expected
    assert "admin reads hidden" in browser.find_element(By.ID, "audit-summary").text
    browser.find_element(By.CSS_SELECTOR, "label[for='a-hide-reads']").click()
    text_in(browser, "#audit-table tbody", "admin.read")


def test_health_shows_database_digitalocean_budget_and_reconciler(
        browser: Any, live_service: LiveService) -> None:
    go(browser, live_service, "health")
    text_in(browser, "#health-cards", "answers")
    cards = browser.find_element(By.ID, "health-cards").text
    assert "DigitalOcean" in cards and "reachable" in cards
    assert "of 240" in cards and "of 4800" in cards
    assert "Reconciler" in cards
    wait(browser, lambda b: (b.find_element(By.ID, "health-refresh").click() or True)
         and "no pass yet" not in b.find_element(By.ID, "health-cards").text)
    # The refresh re-renders the cards: a card found before that would be stale.
    text_in(browser, "[aria-label='Reconciler']", "ok")


def readme_blocks(heading: str) -> list[str]:
    """The fenced code blocks of every README section whose heading starts with
    ``heading``."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = []
    for section in text.split(f"\n{heading}")[1:]:
        body = section.split("\n#", 1)[0]
        blocks += re.findall(r"^```[a-z]*\n(.*?)^```", body, re.M | re.S)
    return blocks


def commands(text: str, program: str) -> list[set[str]]:
    """Each command line of ``program`` (continuation lines joined, leading variable
    assignments left out), as a set of words."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words.pop(0)
        if words and words[0] == program:
            found.append(set(words))
    return found


def covered(readme: str, console: str, program: str) -> None:
    """Every README command line of ``program`` is one of the console's, give or take
    options the console adds (the README may leave out --accept-tos, say)."""
    theirs = commands(readme, program)
    assert theirs, f"no {program} command in the README section"
    for words in theirs:
        assert any(words <= ours for ours in commands(console, program)), (words, console)


def test_client_configuration_matches_the_readme(browser: Any, live_service: LiveService
                                                 ) -> None:
    """What the console hands out is what the README documents (for example.com, with the
    README's placeholders filled in): client command lines, variables, files. The README
    provisions the credential with the CLI where the console shows its values, so those
    lines are not compared."""
    go(browser, live_service, "issue")
    visible(browser, "#i-domain").send_keys("example.com")
    browser.find_element(By.CSS_SELECTOR, "#issue-form button[type=submit]").click()
    key = visible(browser, "#issue-result-key").text
    snippets = {el.get_attribute("data-client"): el.find_element(By.TAG_NAME, "pre").text
                for el in browser.find_elements(By.CSS_SELECTOR, "#issue-result [data-client]")}
    account = json.loads(snippets["acme-dns-json"])
    assert account["password"] == key

    def filled(block: str) -> str:
        for placeholder, value in (("<username>", account["username"]), ("<password>", key),
                                   ("<subdomain>", account["subdomain"])):
            block = block.replace(placeholder, value)
        return block.strip()

    [issuer] = [b for b in readme_blocks("### cert-manager") if "ClusterIssuer" in b]
    assert list(yaml.safe_load_all(snippets["cert-manager"]))[1] == yaml.safe_load(issuer)
    assert filled(readme_blocks("### Caddy")[0]) == snippets["caddy"]
    acme_sh = readme_blocks("### acme.sh")[0]
    covered(acme_sh, snippets["acme-sh"], "acme.sh")
    for variable in set(re.findall(r"ACMEDNS_[A-Z_]+", acme_sh)):
        assert f"{variable}=" in snippets["acme-sh"], variable
    hooks = next(b for b in readme_blocks("### certbot") if "--manual-auth-hook" in b)
    covered(hooks, snippets["certbot"], "certbot")
    lego = [b for b in readme_blocks("### lego") if "ACME_DNS_" in b]
    httpreq = next(b for b in readme_blocks("### lego") if "--dns httpreq" in b)
    assert lego
    for block in lego:
        covered(block, snippets["lego"], "lego")
        for line in block.splitlines():
            if line.startswith("ACME_DNS_"):
                assert line.removesuffix(" \\") in snippets["lego"], line
    # The README's httpreq example is for www.example.com.
    covered(httpreq.replace("www.example.com", "example.com"), snippets["lego-httpreq"], "lego")
    for variable in ("HTTPREQ_ENDPOINT", "HTTPREQ_USERNAME", "HTTPREQ_PASSWORD"):
        assert variable in httpreq and f"{variable}=" in snippets["lego-httpreq"], variable


def test_every_field_has_a_label(browser: Any, live_service: LiveService) -> None:
    go(browser, live_service, "accounts")
    visible(browser, "#accounts-table")
    unlabelled = browser.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')]
          .filter((el) => el.labels.length === 0 && !el.getAttribute('aria-label'))
          .map((el) => el.id || el.name);""")
    assert unlabelled == []


def test_readable_on_a_phone_and_screenshot(browser: Any, live_service: LiveService,
                                            tmp_path: Path) -> None:
    browser.set_window_size(390, 844)
    try:
        for route in ("accounts", "issue", "audit", "health"):
            go(browser, live_service, route)
            visible(browser, f"#view-{route} h1")
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, route
    finally:
        browser.set_window_size(1280, 900)
    # The README's picture: a credential just issued, with its client configuration.
    go(browser, live_service, "issue")
    visible(browser, "#i-domain").send_keys("api.example.com")
    browser.find_element(By.ID, "i-note").send_keys("payments API, cluster eu-1")
    browser.find_element(By.CSS_SELECTOR, "#issue-form button[type=submit]").click()
    visible(browser, "#issue-result-key")
    browser.execute_script("window.scrollTo(0, 0)")
    target = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "console.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(target))
    assert target.stat().st_size > 10_000
    assert csp_violations(browser) == []


@pytest.fixture(autouse=True)
def _no_leftover_dialog(browser: Any) -> None:
    browser.execute_script("const d = document.getElementById('confirm'); if (d && d.open) d.close()")
