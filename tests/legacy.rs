//! Legacy event types: the body the original delivered, byte for byte (reference section 3.3),
//! with the fields it lost by mistake appended after its own (reference B5, B6).

use std::collections::HashMap;

use crate::support::receiver::{Captured, Receiver};
use crate::{SOON, register, setup, webhook};

/// (channel, message as the original's publishers send it, expected `data` bytes).
const CASES: [(&str, &str, &str, &str); 7] = [
    (
        "job_submitted",
        r#"{"job_id":"job-1","service_required":"comfyui","priority":50,"payload":{"prompt":"a cat","steps":20,"cfg":7.0},"requirements":{"gpu":true},"customer_id":"cust-1","created_at":"2025-10-04T12:00:00.000Z","status":"pending","timestamp":1759579200000,"workflow_id":"wf-1","workflow_priority":50,"workflow_datetime":1759579100000,"current_step":1,"total_steps":3}"#,
        "1759579200000",
        r#"{"job_id":"job-1","job_type":"comfyui","workflow_id":"wf-1","workflow_priority":50,"workflow_datetime":1759579100000,"total_steps":3,"current_step":1,"job_status":"pending","priority":50,"payload":{"prompt":"a cat","steps":20,"cfg":7},"requirements":{"gpu":true},"customer_id":"cust-1","submitted_at":"2025-10-04T12:00:00.000Z"}"#,
    ),
    (
        "update_job_progress",
        r#"{"job_id":"job-1","worker_id":"worker-1","progress":45.5,"status":"in_progress","message":"Sampling","current_step":"","total_steps":0,"estimated_completion":"","timestamp":1759579201000}"#,
        "1759579201000",
        // The original's keys end at "progress"; message, status, estimated_completion are B6.
        r#"{"job_id":"job-1","worker_id":"worker-1","progress":45.5,"message":"Sampling","status":"in_progress","estimated_completion":""}"#,
    ),
    (
        "complete_job",
        r#"{"job_id":"job-1","worker_id":"worker-1","progress":100,"status":"completed","message":"done","result":{"ok":true,"images":["a.png"],"seconds":12.50},"timestamp":1759579300000,"workflow_id":"wf-1","current_step":1,"total_steps":3,"workflow_priority":50,"workflow_datetime":1759579100000}"#,
        "1759579300000",
        r#"{"job_id":"job-1","worker_id":"worker-1","workflow_id":"wf-1","workflow_priority":50,"workflow_datetime":1759579100000,"total_steps":3,"current_step":1,"result":{"ok":true,"images":["a.png"],"seconds":12.5},"completed_at":1759579300000}"#,
    ),
    (
        "job_failed",
        r#"{"job_id":"job-2","worker_id":"worker-1","status":"failed","error":"CUDA out of memory","failed_at":"2025-10-04T12:05:00.000Z","retry_count":3,"can_retry":false,"timestamp":1759579500000}"#,
        "1759579500000",
        r#"{"job_id":"job-2","worker_id":"worker-1","error":"CUDA out of memory","failed_at":"2025-10-04T12:05:00.000Z"}"#,
    ),
    (
        "workflow_submitted",
        r#"{"workflow_id":"wf-1","first_job_id":"job-1","total_steps":3,"workflow_priority":50,"workflow_datetime":1759579100000,"customer_id":"cust-1","service_required":"comfyui","timestamp":1759579100000,"workflow_type":"txt2img","message":"Workflow submitted"}"#,
        "1759579100000",
        // The original's keys end at "total_steps"; the rest are B6.
        r#"{"workflow_id":"wf-1","workflow_priority":50,"workflow_datetime":1759579100000,"total_steps":3,"first_job_id":"job-1","customer_id":"cust-1","service_required":"comfyui","workflow_type":"txt2img","message":"Workflow submitted"}"#,
    ),
    (
        "workflow_completed",
        r#"{"workflow_id":"wf-1","status":"completed","completed_at":"2025-10-04T12:10:00.000Z","timestamp":1759579800000,"verified":true,"message":"Workflow completed","workflow_details":{"id":"wf-1","name":"My flow","job_type":"comfyui","status":"completed","progress":100,"created_at":"2025-10-04T11:58:20.000Z","completed_at":"2025-10-04T12:10:00.000Z"},"outputs_available":true,"outputs_count":2,"workflow_output_verified_at":"2025-10-04T12:10:01.000Z"}"#,
        "1759579800000",
        r#"{"workflow_id":"wf-1","timestamp":1759579800000,"status":"completed","completed_at":"2025-10-04T12:10:00.000Z","verified":true,"message":"Workflow completed","workflow_details":{"id":"wf-1","name":"My flow","job_type":"comfyui","status":"completed","progress":100,"created_at":"2025-10-04T11:58:20.000Z","completed_at":"2025-10-04T12:10:00.000Z"}}"#,
    ),
    (
        "workflow_failed",
        r#"{"workflow_id":"wf-2","failed_job_id":"job-2","failed_at_step":2,"total_steps":3,"worker_id":"worker-1","error":"CUDA out of memory","failed_at":1759579500000,"timestamp":1759579500001,"workflow_type":"txt2img","message":"Workflow failed"}"#,
        "1759579500001",
        r#"{"worker_id":"worker-1","workflow_id":"wf-2","total_steps":3,"timestamp":1759579500001,"failed_job_id":"job-2","failed_at_step":2,"error":"CUDA out of memory","failed_at":1759579500000,"workflow_type":"txt2img","message":"Workflow failed"}"#,
    ),
];

fn by_event_type(requests: &[Captured]) -> HashMap<String, Captured> {
    requests
        .iter()
        .map(|r| {
            (
                r.header("x-webhook-event").unwrap_or("").to_string(),
                r.clone(),
            )
        })
        .collect()
}

fn is_event_id(id: &str) -> bool {
    let mut parts = id.splitn(3, '_');
    parts.next() == Some("wh")
        && parts
            .next()
            .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
        && parts.next().is_some_and(|s| {
            s.len() == 9
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        })
}

#[test]
fn legacy_bodies_are_byte_identical_to_the_original() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let names: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    register(
        &redis,
        &service,
        "wh_1_legacy",
        webhook(&receiver.url("/legacy"), &names),
    );
    for (channel, message, _, _) in CASES {
        assert_eq!(
            redis.publish(channel, message),
            1,
            "nobody subscribed to {channel}"
        );
    }
    let got = by_event_type(&receiver.wait_for(CASES.len(), SOON));
    for (channel, _, timestamp, data) in CASES {
        let request = got
            .get(channel)
            .unwrap_or_else(|| panic!("no delivery of {channel}; got {:?}", got.keys()));
        let event_id = request.header("x-event-id").unwrap_or("");
        assert!(is_event_id(event_id), "{channel}: event id {event_id:?}");
        let expected = format!(
            r#"{{"event_type":"{channel}","event_id":"{event_id}","timestamp":{timestamp},"webhook_id":"wh_1_legacy","data":{data}}}"#
        );
        assert_eq!(request.body_str(), expected, "{channel}: body differs");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("user-agent"),
            Some("EMP-Job-Queue-Webhook/1.0")
        );
        assert_eq!(request.header("x-webhook-event"), Some(channel));
        assert_eq!(request.header("x-webhook-id"), Some("wh_1_legacy"));
    }
    assert_eq!(
        receiver.requests().len(),
        CASES.len(),
        "one delivery per event"
    );
}

/// (channel, a message without `timestamp` as publishers send it, the original's `data`; `{now}`
/// stands for the envelope's `timestamp`, the time of receipt). Reference section 3.3: only
/// `submitted_at` and the workflow events' `timestamp` fall back to the event's time; a
/// completion has no `completed_at` and a failure no `failed_at` without a time of their own.
const WITHOUT_TIMESTAMP: [(&str, &str, &str); 8] = [
    (
        "job_submitted",
        r#"{"job_id":"nt-1","service_required":"comfyui","priority":0,"payload":{"p":1},"customer_id":"c"}"#,
        r#"{"job_id":"nt-1","job_type":"comfyui","job_status":"pending","priority":50,"payload":{"p":1},"customer_id":"c","submitted_at":{now}}"#,
    ),
    (
        "update_job_progress",
        r#"{"job_id":"nt-2","worker_id":"w1","progress":10}"#,
        r#"{"job_id":"nt-2","worker_id":"w1","progress":10}"#,
    ),
    (
        "complete_job",
        r#"{"job_id":"nt-3","worker_id":"w1","result":{"ok":true}}"#,
        r#"{"job_id":"nt-3","worker_id":"w1","result":{"ok":true}}"#,
    ),
    // The base worker's failure: no timestamp, no worker_id, no error text.
    (
        "job_failed",
        r#"{"job_id":"nt-4","service_type":"comfyui"}"#,
        r#"{"job_id":"nt-4","error":"Unknown error"}"#,
    ),
    (
        "job_failed",
        r#"{"job_id":"nt-5","error":"boom","failed_at":"2025-10-04T12:05:00.000Z"}"#,
        r#"{"job_id":"nt-5","error":"boom","failed_at":"2025-10-04T12:05:00.000Z"}"#,
    ),
    (
        "workflow_submitted",
        r#"{"workflow_id":"nt-6","total_steps":2,"first_job_id":"j1"}"#,
        r#"{"workflow_id":"nt-6","total_steps":2,"first_job_id":"j1"}"#,
    ),
    (
        "workflow_completed",
        r#"{"workflow_id":"nt-7","status":"completed","verified":true}"#,
        r#"{"workflow_id":"nt-7","timestamp":{now},"status":"completed","verified":true}"#,
    ),
    (
        "workflow_failed",
        r#"{"workflow_id":"nt-8","worker_id":"w1","error":"boom","failed_at":5}"#,
        r#"{"worker_id":"w1","workflow_id":"nt-8","timestamp":{now},"error":"boom","failed_at":5}"#,
    ),
];

#[test]
fn legacy_bodies_of_messages_without_timestamp_are_the_originals() {
    let (redis, service) = setup(&[]);
    let receiver = Receiver::ok();
    let mut names: Vec<&str> = WITHOUT_TIMESTAMP.iter().map(|c| c.0).collect();
    names.dedup();
    register(
        &redis,
        &service,
        "wh_1_untimed",
        webhook(&receiver.url("/untimed"), &names),
    );
    let before = crate::now_ms();
    for (channel, message, _) in WITHOUT_TIMESTAMP {
        assert_eq!(redis.publish(channel, message), 1, "{channel}");
    }
    let after = crate::now_ms();
    let got = receiver.wait_for(WITHOUT_TIMESTAMP.len(), SOON);
    for (channel, message, data) in WITHOUT_TIMESTAMP {
        let id = serde_json::from_str::<serde_json::Value>(message)
            .ok()
            .and_then(|m| {
                m.get("job_id")
                    .or_else(|| m.get("workflow_id"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let request = got
            .iter()
            .find(|r| r.json()["data"].to_string().contains(&format!("\"{id}\"")))
            .unwrap_or_else(|| panic!("no delivery of {channel} {message}"));
        let body = request.json();
        let now = body["timestamp"].as_u64().unwrap_or(0);
        assert!(
            (before..=after + 1000).contains(&now),
            "{channel}: the envelope's timestamp {now} is not the time of receipt"
        );
        let event_id = request.header("x-event-id").unwrap_or("");
        let expected = format!(
            r#"{{"event_type":"{channel}","event_id":"{event_id}","timestamp":{now},"webhook_id":"wh_1_untimed","data":{}}}"#,
            data.replace("{now}", &now.to_string())
        );
        assert_eq!(request.body_str(), expected, "{channel} {message}");
    }
    assert_eq!(receiver.requests().len(), WITHOUT_TIMESTAMP.len());
}
