//! The dashboard in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`) against a lan manager and a master with a real
//! child. A need added through the API appears as running on the page.

use allex_e2e::{cluster, DEADLINE};
use allex_sim::harness::Timings;
use allex_sim::wait::wait_until;
use allex_testkit::browser::Browser;
use serde_json::Value;

#[test]
fn a_need_added_through_the_api_shows_up_running_on_the_dashboard() {
    if let Some(why) = Browser::unavailable() {
        allex_sim::skip(
            "a_need_added_through_the_api_shows_up_running_on_the_dashboard",
            &why,
        );
        return;
    }
    let c = cluster(1, false, 10, Timings::default());
    let http = c.lan().http().unwrap();
    let page = http.url("/");
    let browser = Browser::start(1400, 900).unwrap();
    browser.goto(&page).unwrap();
    // The page is served from the binary with nothing external to fetch.
    let title = browser.eval("return document.title").unwrap();
    assert_eq!(title, "allex lan manager");
    let master = c.master(0).name().to_string();
    wait_until("the page to list the master", DEADLINE, || {
        let names = browser
            .eval("return [...document.querySelectorAll('#masters tbody td:first-child')].map(td => td.textContent)")?;
        match names.as_array() {
            Some(a) if a.iter().any(|n| n == &Value::from(master.as_str())) => Ok(()),
            _ => Err(allex_sim::harness::HarnessError::Expectation(format!("{names}"))),
        }
    })
    .unwrap();

    let added = http
        .post(
            "/v1/needs",
            r#"{"modulename":"testsvc","instancename":"Shown"}"#,
        )
        .unwrap();
    assert_eq!(added.status, 201, "{added:?}");
    // Live: the page follows /v1/events, so the row appears without a reload.
    let row = wait_until("Shown running on the page", DEADLINE, || {
        let row = browser.eval(
            "const r = document.querySelector('#running tr[data-instance=\"Shown\"]'); \
             const n = document.querySelector('#needs tr[data-instance=\"Shown\"] .state'); \
             return r && n ? {running: r.textContent, state: n.textContent} : null",
        )?;
        if row.is_null() || row["state"] != "running" {
            return Err(allex_sim::harness::HarnessError::Expectation(format!(
                "{row}"
            )));
        }
        Ok(row)
    })
    .unwrap();
    let listed = c.lan_status().unwrap();
    let rec = listed
        .running
        .iter()
        .find(|r| r.instancename == "Shown")
        .unwrap();
    let text = row["running"].as_str().unwrap();
    assert!(
        text.contains(&master) && text.contains(&rec.pid.to_string()),
        "{text}"
    );
    let feed = browser
        .eval("return [...document.querySelectorAll('#feed [data-type]')].map(d => d.dataset.type)")
        .unwrap();
    for kind in ["need_added", "claimed", "spawned", "running"] {
        assert!(
            feed.as_array().unwrap().iter().any(|t| t == kind),
            "no {kind} in the feed: {feed}"
        );
    }
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&shot).unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}
