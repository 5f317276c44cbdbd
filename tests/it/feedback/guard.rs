//! The reputation guard and warm-up: a stream whose complaint rate crosses
//! the pause threshold holds new mail until it is resumed, and a warming
//! stream sends no more a day than its ramp allows. "Held" is judged after
//! a barrier: a later message on another stream reached the sink, so the
//! workers were sending while the held one stayed queued.

use serde_json::Value;

use super::fixtures::{hook, Report};
use super::*;

const SENDS: usize = 10;

fn health(addr: std::net::SocketAddr, stream: &str) -> Value {
    let resp = get(addr, &format!("/v1/streams/{stream}/health"));
    assert_eq!(resp.status, 200, "health of {stream}: {}", resp.text());
    resp.json()
}

/// Sends one message on `transactional` and waits until the sink has it.
fn barrier(addr: std::net::SocketAddr, rig: &Rig, to: &str) {
    relay_one(addr, &rig.sink, "transactional", to);
}

#[test]
fn complaints_over_the_threshold_pause_the_stream_until_it_is_resumed() {
    let mut rig = Rig::start();
    let esp = Esp::Postmark;
    let toml = format!(
        "{}{}\n[mail.guard]\nmin_sends = {SENDS}\ncomplaint_warn_rate = 0.05\ncomplaint_pause_rate = 0.15\n\
         bounce_warn_rate = 0.5\nbounce_pause_rate = 0.9\n",
        rig.peer.config(&rig.pki, &[esp]),
        mail_config(&rig.sink, &[("news", &esp_line(esp)), ("transactional", "")])
    );
    let d = Daemon::start(&toml);

    let targets: Vec<Target> = (0..SENDS)
        .map(|i| relay_one(d.addr, &rig.sink, "news", &format!("reader{i}@example.net")))
        .collect();
    let before = health(d.addr, "news");
    assert_eq!(before["stream"], "news", "{before}");
    assert_eq!(before["paused"], false, "{before}");
    assert_eq!(before["window_24h"]["sent"], SENDS, "{before}");
    assert_eq!(before["window_24h"]["complaints"], 0, "{before}");
    assert_eq!(before["window_last_1000"]["sent"], SENDS, "{before}");

    // One complaint in ten is over the warning, under the pause.
    let resp = hook(
        &mut rig.peer,
        esp,
        Report::Complaint,
        &targets[0],
        &event_id(esp, 1),
    )
    .post(d.addr, esp);
    assert_applied(&resp, 1, 0);
    let warned = health(d.addr, "news");
    assert_eq!(warned["paused"], false, "{warned}");
    assert!(warned["warning"].is_string(), "{warned}");
    assert_eq!(warned["window_24h"]["complaints"], 1, "{warned}");

    let resp = hook(
        &mut rig.peer,
        esp,
        Report::Complaint,
        &targets[1],
        &event_id(esp, 2),
    )
    .post(d.addr, esp);
    assert_applied(&resp, 1, 0);
    let mut paused = Value::Null;
    let did_pause = wait_until(deadline(SETTLE), || {
        paused = health(d.addr, "news");
        paused["paused"] == true
    });
    assert!(
        did_pause,
        "two complaints in ten did not pause the stream: {paused}"
    );
    assert!(paused["pause_reason"].is_string(), "{paused}");
    assert_eq!(paused["window_24h"]["complaints"], 2, "{paused}");
    let rate = paused["window_24h"]["complaint_rate"]
        .as_f64()
        .expect("a rate");
    assert!((rate - 0.2).abs() < 1e-9, "{paused}");
    let pauses: Vec<Value> = list_all(d.addr, "type=stream.paused", &[])
        .into_iter()
        .filter(|e| e["data"]["stream"] == "news")
        .collect();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    let warnings = list_all(d.addr, "type=stream.warning", &[]);
    assert!(
        warnings.iter().any(|e| e["data"]["stream"] == "news"),
        "{warnings:?}"
    );
    let listed = get(d.addr, "/v1/streams").json();
    let news = listed["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stream"] == "news"))
        .unwrap_or_else(|| panic!("news missing from {listed}"));
    assert_eq!(news["paused"], true, "{listed}");

    let held = send(d.addr, "news", "newcomer@example.net");
    barrier(d.addr, &rig, "barrier@example.net");
    assert_eq!(email(d.addr, &held)["status"], "queued");
    assert!(rig.sink.transactions_for("newcomer@example.net").is_empty());

    let resp = request(d.addr, "POST", "/v1/streams/news/resume", &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["paused"], false, "{}", resp.text());
    assert_eq!(resp.json()["stream"], "news", "{}", resp.text());
    wait_status(d.addr, &held, "sent");
    rig.sink.wait_for_id(&held, deadline(SETTLE));

    for (method, path) in [
        ("GET", "/v1/streams/nonesuch/health"),
        ("POST", "/v1/streams/nonesuch/pause"),
        ("POST", "/v1/streams/nonesuch/resume"),
    ] {
        let resp = request(d.addr, method, path, &[], b"");
        assert_eq!(resp.status, 404, "{method} {path}: {}", resp.text());
    }
}

#[test]
fn a_paused_stream_holds_its_mail_and_resuming_sends_it() {
    let rig = Rig::start();
    let d = Daemon::start(&mail_config(
        &rig.sink,
        &[("news", ""), ("transactional", "")],
    ));
    let resp = request(d.addr, "POST", "/v1/streams/news/pause", &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["paused"], true, "{}", resp.text());

    let held: Vec<String> = (0..3)
        .map(|i| send(d.addr, "news", &format!("held{i}@example.net")))
        .collect();
    barrier(d.addr, &rig, "barrier@example.net");
    for id in &held {
        assert_eq!(email(d.addr, id)["status"], "queued", "{id}");
    }
    let resp = request(d.addr, "POST", "/v1/streams/news/resume", &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    for id in &held {
        rig.sink.wait_for_id(id, deadline(SETTLE));
    }
}

#[test]
fn a_warming_stream_sends_its_daily_cap_and_holds_the_rest() {
    let rig = Rig::start();
    let d = Daemon::start(&mail_config(
        &rig.sink,
        &[("ramp", "warmup = [2]"), ("transactional", "")],
    ));
    let ids: Vec<String> = (0..5)
        .map(|i| send(d.addr, "ramp", &format!("early{i}@example.net")))
        .collect();
    rig.sink.wait_for_messages(2, deadline(SETTLE));
    barrier(d.addr, &rig, "barrier@example.net");

    let statuses: Vec<Value> = ids
        .iter()
        .map(|id| email(d.addr, id)["status"].clone())
        .collect();
    let sent = statuses.iter().filter(|s| **s == "sent").count();
    let queued = statuses.iter().filter(|s| **s == "queued").count();
    assert_eq!((sent, queued), (2, 3), "{statuses:?}");
    let ramp_arrivals = rig
        .sink
        .received()
        .iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r.starts_with("early")))
        .count();
    assert_eq!(ramp_arrivals, 2, "{:?}", rig.sink.transactions());

    let h = health(d.addr, "ramp");
    assert_eq!(h["warmup"]["cap"], 2, "{h}");
    assert_eq!(h["warmup"]["sent_today"], 2, "{h}");
    assert_eq!(h["paused"], false, "a cap is not a pause: {h}");
    let plain = health(d.addr, "transactional");
    assert_eq!(plain["warmup"], Value::Null, "{plain}");
}
