//! Intake: every source channel, malformed input, duplicates, throttling, registry changes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::wait_until;
use crate::{SOON, register, setup, webhook};

#[test]
fn a_completed_job_reaches_a_webhook() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    register(&redis, &service, "wh_1_a", webhook(&receiver.url("/hook"), &["complete_job"]));
    redis.publish("complete_job", r#"{"job_id":"j1","worker_id":"w1","result":{"ok":true},"timestamp":1700000000000}"#);
    let got = receiver.wait_for(1, SOON);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].json()["data"]["job_id"], "j1");
}
